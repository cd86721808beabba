"""The run record: results.json (docs/architecture.md#run-folder), written atomically and updated as each step
finishes, and read back as a RunResults.

Its steps are StepResult objects (steps/step_result.py), whichever backend ran them; keys a step wrote that
this version does not know are kept as written. RunResults.from_json is the one reader of a run's own fields:
results.json is read mid-run, after a crash and from other writers (Azure ML's report node, the backstop), so
every field may be missing, null or of the wrong type, and the code downstream must not care.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from steps.atomic import write_json_atomic
from steps.step_result import NOT_PASSED, SCHEMA, STATUSES, StepResult, Timed, as_dict, str_or_none, utc_now

__all__ = ["NOT_PASSED", "SCHEMA", "STATUSES", "StepResult", "utc_now", "write_json_atomic", "RunRecord",
           "RunResults", "AzureMLJob", "load_results", "load_results_json", "count_statuses", "overall_status",
           "RESULTS_FILE", "INTERRUPTED_REASON"]

RESULTS_FILE = "results.json"
# The skip reason of a step that never started because the run was stopped (Ctrl-C, SIGTERM): a repair run
# reruns these, unlike steps the plan skips.
INTERRUPTED_REASON = "run interrupted before this step started"


def count_statuses(steps: Iterable[StepResult]) -> dict[str, int]:
    counts: dict[str, int] = {status: 0 for status in STATUSES}
    for step in steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    return counts


def overall_status(steps: Iterable[StepResult], *, finished: bool, interrupted: bool = False) -> str:
    """passed | failed | running | interrupted. Skipped steps do not fail a run."""
    if interrupted:
        return "interrupted"
    if not finished:
        return "running"
    return "failed" if any(s.not_passed for s in steps) else "passed"


@dataclass(frozen=True)
class AzureMLJob:
    """The `azureml` section of a run submitted to Azure ML (docs/azureml.md)."""

    job_name: str
    studio_url: str | None = None
    run_key: str | None = None
    status: str | None = None  # the pipeline job's own status when the run record was written
    submitted: bool | None = None  # False: an existing job with the same run key was followed instead

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"job_name": self.job_name, "studio_url": self.studio_url, "run_key": self.run_key}
        if self.status is not None:
            data["status"] = self.status
        if self.submitted is not None:
            data["submitted"] = self.submitted
        return data


@dataclass(frozen=True)
class RunResults(Timed):
    """A run's results.json, typed. `sections` keeps the keys this version does not know, as written."""

    run_id: str
    status: str  # passed | failed | running | interrupted | submitted, or what another writer put there
    steps: list[StepResult]
    backend: str | None = None
    experiment: str | None = None
    started_at: str | None = None  # ISO 8601 UTC, as written
    finished_at: str | None = None
    repairs: str | None = None  # the run a repair run repairs
    root: str | None = None  # the plan's folder
    commit: str | None = None
    branch: str | None = None
    reported_by: str | None = None  # which report path wrote it (docs/azureml.md#which-report-path-covers-which-way-in)
    run_key: str | None = None  # the pipeline's run_key input, as the Azure ML report node read it
    azureml: AzureMLJob | None = None
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """What the report calls the run: its experiment."""
        return self.experiment or "notebooks"

    @property
    def counts(self) -> dict[str, int]:
        # Counted from the steps, never read from the file: a partial file may hold stale counts.
        return count_statuses(self.steps)

    @property
    def wall_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, (self.finished - self.started).total_seconds())

    def step(self, step_id: str) -> StepResult | None:
        return next((step for step in self.steps if step.step == step_id), None)

    @classmethod
    def from_json(cls, raw: Any) -> RunResults:
        """The tolerant reader: never fails; a missing run id reads as "unknown", a missing status as "unknown"."""
        data = as_dict(raw)
        raw_steps = data.get("steps")
        steps = [StepResult.from_json(step, index) for index, step in
                 enumerate(raw_steps if isinstance(raw_steps, list) else [])]
        azureml = as_dict(data.get("azureml"))
        job_name = str_or_none(azureml.get("job_name"))
        return cls(
            run_id=str_or_none(data.get("run_id")) or "unknown",
            status=str_or_none(data.get("status")) or "unknown",
            steps=steps,
            backend=str_or_none(data.get("backend")),
            experiment=str_or_none(data.get("experiment")),
            started_at=str_or_none(data.get("started_at")),
            finished_at=str_or_none(data.get("finished_at")),
            repairs=str_or_none(data.get("repairs")),
            root=_text_or_none(data.get("root")),
            commit=_text_or_none(data.get("commit")),
            branch=_text_or_none(data.get("branch")),
            reported_by=str_or_none(data.get("reported_by")),
            run_key=str_or_none(data.get("run_key")),
            azureml=AzureMLJob(job_name=job_name, studio_url=str_or_none(azureml.get("studio_url")),
                               run_key=str_or_none(azureml.get("run_key")), status=str_or_none(azureml.get("status")),
                               submitted=azureml["submitted"] if isinstance(azureml.get("submitted"), bool) else None)
            if job_name else None,
            sections={key: value for key, value in data.items() if key not in _RUN_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """results.json as written (docs/architecture.md#run-folder); unknown sections as they were read."""
        data: dict[str, Any] = {
            **self.sections, "schema": SCHEMA, "run_id": self.run_id, "backend": self.backend,
            "experiment": self.experiment, "status": self.status, "started_at": self.started_at,
            "finished_at": self.finished_at, "counts": self.counts, "steps": [step.to_json() for step in self.steps],
        }
        optional = {"repairs": self.repairs, "root": self.root, "commit": self.commit, "branch": self.branch,
                    "reported_by": self.reported_by, "run_key": self.run_key}
        data.update({key: value for key, value in optional.items() if value is not None})
        if self.azureml is not None:
            data["azureml"] = self.azureml.to_json()
        return data


_RUN_KEYS = frozenset({"schema", "run_id", "status", "steps", "counts", "backend", "experiment", "started_at",
                       "finished_at", "repairs", "root", "commit", "branch", "reported_by", "run_key", "azureml"})


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class RunRecord:
    """results.json of one run folder, rewritten (atomically) every time a step finishes.

    Thread-safe: the local backend records results from its event loop while a signal handler may finish
    the run. Steps keep the plan's order, so the report reads in the order the author wrote.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        run_id: str,
        backend: str,
        experiment: str,
        step_order: list[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._order = {step_id: index for index, step_id in enumerate(step_order)}
        self._steps: dict[str, StepResult] = {}
        self._data: dict[str, Any] = {
            "schema": SCHEMA,
            "run_id": run_id,
            "backend": backend,
            "experiment": experiment,
            "status": "running",
            "started_at": utc_now(),
            "finished_at": None,
            "counts": count_statuses([]),
            "steps": [],
            **(extra or {}),
        }
        self._write()

    @property
    def path(self) -> Path:
        return self.run_dir / RESULTS_FILE

    def record(self, result: StepResult) -> None:
        with self._lock:
            self._steps[result.step] = result
            self._write()

    def finish(self, *, interrupted: bool = False, **extra: Any) -> RunResults:
        with self._lock:
            self._data.update(extra)
            steps = self._ordered()
            self._data["status"] = overall_status(steps, finished=True, interrupted=interrupted)
            self._data["finished_at"] = utc_now()
            self._write()
            return RunResults.from_json(self._data)

    def _ordered(self) -> list[StepResult]:
        return sorted(self._steps.values(), key=lambda s: self._order.get(s.step, len(self._order)))

    def _write(self) -> None:
        steps = self._ordered()
        self._data["steps"] = [step.to_json() for step in steps]
        self._data["counts"] = count_statuses(steps)
        write_json_atomic(self.path, self._data)


def load_results(run_dir: Path) -> RunResults:
    """A run folder's results.json, typed (raises InvalidInputError naming the file when it is not one)."""
    return RunResults.from_json(load_results_json(run_dir))


def load_results_json(run_dir: Path) -> dict[str, Any]:
    """A run folder's results.json as written, for the code that rewrites it (raises InvalidInputError naming
    the file when unreadable)."""
    from orchestrator.errors import InvalidInputError, Problem

    path = run_dir / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError([Problem(str(path), "", "not found: is this a run folder?")]) from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError([Problem(str(path), "", f"cannot be read as JSON ({exc})")]) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("steps"), list):
        raise InvalidInputError([Problem(str(path), "", f"expected a results.json with schema {SCHEMA}")])
    return data
