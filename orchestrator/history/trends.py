"""What the report says about a run against its history: per notebook, the trend of its duration and
metrics over the last runs on the same branch, the change against the baseline (the last run on the
default branch where the notebook passed), and whether it is flaky (its status alternated over recent runs
of the same code).

Read-only, and only from runs started no later than the reported one, so rebuilding an old run's report
shows the history as it stood then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.history.store import HistoryStore, PastRun
from orchestrator.history.vcs import default_branch
from orchestrator.results import RunResults
from steps.step_result import StepResult

TREND_RUNS = 10  # points in a sparkline
FLAKY_WINDOW = 6  # recent runs of the same code looked at
FLAKY_CHANGES = 2  # status changes among them that make a notebook flaky: passed, failed, passed
_RAN = frozenset({"passed", "failed", "timed_out", "crashed", "error"})


@dataclass(frozen=True)
class Series:
    values: tuple[float, ...]  # oldest first; the reported run last when it has the value
    baseline: float | None  # the value in the baseline run

    @property
    def change(self) -> float | None:
        if self.baseline is None or not self.values:
            return None
        return self.values[-1] - self.baseline


@dataclass(frozen=True)
class Baseline:
    run_id: str
    branch: str
    commit: str | None


@dataclass(frozen=True)
class NotebookTrend:
    duration: Series
    metrics: dict[str, Series] = field(default_factory=dict)
    baseline: Baseline | None = None
    flaky: str | None = None  # why, e.g. "passed, failed, passed over the last 3 runs of this code"


def notebook_trends(results: RunResults, store: HistoryStore | None = None) -> dict[str, NotebookTrend]:
    """notebook path -> its trend, for the notebooks of `results` the history knows. Empty when there is no
    history, or the run is not in a plan folder."""
    root, started = results.root, results.started_at
    if root is None or started is None:
        return {}
    store = store or HistoryStore()
    if not store.path.is_file():
        return {}
    notebooks = [step.notebook for step in results.steps]
    past = store.notebook_history(root=root, notebooks=notebooks, before=started)
    run_id, branch = results.run_id, results.branch
    main = default_branch(Path(root))
    trends: dict[str, NotebookTrend] = {}
    for step in results.steps:
        notebook = step.notebook
        everything = past.get(notebook, [])
        runs = [r for r in everything if r.run_id != run_id]  # newest first, this run left out
        # This run's own entry (recorded before the report is built) holds its code id.
        own = next((r.record.code_id for r in everything if r.run_id == run_id), None)
        if runs:
            trends[notebook] = _trend(step, runs, branch, main, own)
    return trends


def _trend(step: StepResult, runs: Sequence[PastRun], branch: str | None, main: str,
           code: str | None) -> NotebookTrend:
    same_branch = [r for r in runs if r.record.status in _RAN and r.branch == branch][: TREND_RUNS - 1]
    baseline_run = next((r for r in runs if r.branch == main and r.record.status == "passed"), None)
    chronological = list(reversed(same_branch))
    duration = step.duration_s if step.status in _RAN else None
    durations = [r.record.duration_s for r in chronological if r.record.duration_s is not None]
    metrics_now = {k: float(v) for k, v in step.metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
    names = sorted(set(metrics_now) | {name for r in same_branch for name in r.record.metrics})
    metrics = {
        name: Series(
            tuple([r.record.metrics[name] for r in chronological if name in r.record.metrics]
                  + ([metrics_now[name]] if name in metrics_now else [])),
            baseline_run.record.metrics.get(name) if baseline_run else None,
        )
        for name in names
    }
    return NotebookTrend(
        duration=Series(
            tuple(durations + ([duration] if duration is not None else [])),
            baseline_run.record.duration_s if baseline_run else None,
        ),
        metrics=metrics,
        baseline=Baseline(baseline_run.run_id, main, baseline_run.commit) if baseline_run else None,
        flaky=flakiness(step.status, code, runs),
    )


def flakiness(status: str, code: str | None, runs: Sequence[PastRun]) -> str | None:
    """Why the notebook is flaky, or None: over its recent runs of the same code (and parameters) as this
    run (`status`, `code`), its status went from passed to not passed and back at least twice."""
    if code is None:
        return None
    statuses = [r.record.status for r in runs if r.record.code_id == code and r.record.status in _RAN]
    statuses = list(reversed(statuses[: FLAKY_WINDOW - 1]))
    if status in _RAN:
        statuses.append(status)
    outcomes = [status == "passed" for status in statuses]
    changes = sum(1 for before, after in zip(outcomes, outcomes[1:]) if before != after)
    if changes < FLAKY_CHANGES:
        return None
    return f"{', '.join(statuses)} over the last {len(statuses)} runs of this code"
