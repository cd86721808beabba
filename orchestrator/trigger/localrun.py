"""kick_off on this machine (`orchestrator handle MESSAGE.json --backend local`): the whole DevOps -> queue ->
pipeline -> DevOps loop without a cloud account, the end-to-end demonstration of docs/architecture.md#ways-in way in 1.

fetch -> plan -> the local backend runs the notebooks (live feed lines on the server job, and a watcher that
stops the run when DevOps cancels the job) -> report -> test run, task log and exactly one TaskCompleted:
the same library calls as `orchestrator run --devops --callback` (orchestrator/cli/run.py `execute`).

Duplicates: a marker per (PlanId, JobId, TaskInstanceId) in ORCHESTRATOR_STATE_DIR, claimed atomically
(dedupe.py). A second delivery never starts a second run: it finds the first one running (and leaves it be),
finished (and makes sure its job is closed), or crashed (and reports what that run recorded).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.publish import close_server_task, report_to_devops
from orchestrator.progress import PlainProgress
from orchestrator.trigger.dedupe import FINISHED, LocalMarkers, Marker
from orchestrator.trigger.intake import Accepted
from orchestrator.trigger.kickoff import task_disposition
from orchestrator.trigger.messages import KickOff
from orchestrator.trigger.outcome import Outcome, completed
from orchestrator.trigger.planning import check_source, fetch_plan
from orchestrator.trigger.services import Services

log = logging.getLogger("orchestrator.trigger")


def kick_off_local(accepted: Accepted, services: Services) -> Outcome:
    message, context = accepted.message, accepted.context
    assert isinstance(message, KickOff) and context is not None and context.task is not None
    source = check_source(message, services)   # a refused URL claims nothing
    key = context.task.key
    markers = LocalMarkers(services.settings.state_dir)
    earlier = markers.claim(key)
    if earlier is not None:
        if not _never_started(earlier):
            return _duplicate(earlier, context, services)
        markers.update(key, pid=os.getpid(), status="running")  # a claim whose process died before running anything

    disposition = task_disposition(context, services)
    if disposition.closed:
        markers.update(key, status=FINISHED, note=disposition.closed)
        return completed(f"nothing started: {disposition.closed}")
    if not disposition.callback:
        # waitForCompletion: false: no live feed, no cancellation watch, no TaskCompleted; the test run still.
        context = context.without_task()
    try:
        with fetch_plan(message, context, services, source) as fetched:
            status, run_dir = _run(fetched.plan, context, services, markers, key, services.progress)
    except BaseException:
        if markers.read(key).run_dir is None:   # nothing ran: let a redelivery try again from the start
            markers.path(key).unlink(missing_ok=True)
        raise
    from orchestrator.run_folder import release_run_dir

    try:
        return _report(run_dir, context, services, markers, key, status)
    finally:
        release_run_dir(run_dir)  # a worker runs many runs: one lock file descriptor per run would pile up


def _run(plan: Any, context: DevOpsContext, services: Services, markers: LocalMarkers, key: str,
         progress: Any) -> tuple[str, Path]:
    from orchestrator.backends import RunOptions, get_backend
    from orchestrator.run_folder import new_run_id, prepare_run_dir
    from orchestrator.running import run_plan

    run_id = new_run_id()
    run_dir = prepare_run_dir(services.out, run_id)
    markers.update(key, run_dir=str(run_dir), run_id=run_id)  # from here on, this key has a run
    options = RunOptions(run_dir=run_dir, run_id=run_id, jobs=services.jobs)
    started = time.monotonic()
    finished = run_plan(get_backend("local"), plan, options, progress or PlainProgress.to_lines(log.info), devops=context,
                        feed_policy=_feed_policy(services))
    status = "canceled" if finished.cancelled_by_devops else finished.status
    log.info("local run=%s status=%s secs=%.1f", run_id, status, time.monotonic() - started)
    return status, run_dir


def _feed_policy(services: Services) -> Any:
    from orchestrator.devops.live import FEED_POLICY

    return services.devops_policy if services.devops_policy.budget_s < FEED_POLICY.budget_s else FEED_POLICY


def _report(run_dir: Path, context: DevOpsContext, services: Services, markers: LocalMarkers, key: str,
            status: str, notes: list[str] | None = None) -> Outcome:
    from orchestrator.report import build_report

    build_report(run_dir)
    outcome = report_to_devops(run_dir, context, policy=services.devops_policy,
                               result="canceled" if status == "canceled" else None, notes=notes)
    markers.update(key, status=FINISHED, result=outcome.task_result,
                   closed=bool(outcome.task_completed or outcome.already_completed))
    problems = "; ".join(outcome.all_problems)
    closing = (f"DevOps task {outcome.task_result or 'not closed'}" if context.task is not None
               else "no TaskCompleted sent (waitForCompletion: false)")
    detail = (f"ran {run_dir}: {status}; {closing}"
              + (f" ({outcome.already_completed})" if outcome.already_completed else "")
              + (f"; problems: {problems}" if problems else ""))
    return completed(detail, run_status="interrupted" if status == "canceled" else status)


def _never_started(marker: Marker) -> bool:
    return marker.status != FINISHED and marker.run_dir is None and not marker.alive


def _duplicate(marker: Marker, context: DevOpsContext, services: Services) -> Outcome:
    """A second delivery for a key that already has a run: never a second run."""
    run_dir = marker.run_dir
    if marker.status != FINISHED and marker.alive:
        return completed(f"already being handled by process {marker.data.get('pid')}: nothing started")
    has_results = run_dir is not None and (run_dir / "results.json").is_file()
    if marker.status == FINISHED:
        if has_results and not marker.data.get("closed"):
            assert run_dir is not None
            report_to_devops(run_dir, context, policy=services.devops_policy)  # idempotent (devops.json)
        return completed(f"already handled ({run_dir or 'no run'}): nothing started")
    # The process that ran it stopped before it finished (a crash, a kill): report what it recorded.
    key = context.task.key if context.task else ""
    markers = LocalMarkers(services.settings.state_dir)
    note = "The process that ran this message stopped before it finished; this report shows what it recorded."
    if has_results:
        assert run_dir is not None
        return _report(run_dir, context, services, markers, key, "failed", notes=[note])
    close_server_task(context, "failed", [note, "No notebook result was recorded. Run the pipeline again."],
                      policy=services.devops_policy)
    markers.update(key, status=FINISHED, closed=True)
    return completed("an earlier delivery's run stopped before recording anything: the DevOps task was closed")
