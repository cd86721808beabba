"""Running a plan on a backend, optionally watched by Azure DevOps: the one place that wires the live feed
and the cancellation watcher around a backend run (used by `orchestrator run --devops` and by
`orchestrator handle`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.backends import Backend, RunOptions
from orchestrator.plan.spec import ResolvedPlan
from orchestrator.progress import Progress, TeeProgress


@dataclass(frozen=True)
class Finished:
    status: str  # the backend's: passed | failed | interrupted | submitted ("failed" if it raised)
    cancelled_by_devops: bool


def run_plan(backend: Backend, plan: ResolvedPlan, options: RunOptions, progress: Progress, *,
             devops: Any = None, feed_policy: Any = None) -> Finished:
    """Run `plan`. With a DevOps context, progress is also posted to the server job's feed and a watcher
    stops the run (like Ctrl-C) when DevOps shows the job cancelled or timed out. The feed and the watcher are
    closed on every path; reporting is the caller's (it must happen even when this raises)."""
    if devops is None:
        return Finished(backend.run(plan, options, progress).status, cancelled_by_devops=False)
    from orchestrator.devops import CancellationWatcher, LiveReporter

    live = LiveReporter(devops) if feed_policy is None else LiveReporter(devops, policy=feed_policy)
    # The watcher's thread calls this; StopRequest is thread-safe.
    watcher = CancellationWatcher(devops, lambda why: options.stop.request(f"DevOps: {why}")).start()
    status = "failed"
    try:
        status = backend.run(plan, options, TeeProgress(progress, live)).status
    finally:
        watcher.stop()
        live.close()
    return Finished(status, cancelled_by_devops=watcher.cancelled)
