"""The run record: results.json (docs/architecture.md#run-folder), written atomically and updated as each step
finishes.

Its steps are StepResult objects (steps/step_result.py), whichever backend ran them; keys a step wrote that
this version does not know are kept as written.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Iterable

from steps.atomic import write_json_atomic
from steps.step_result import NOT_PASSED, SCHEMA, STATUSES, StepResult, utc_now

__all__ = ["NOT_PASSED", "SCHEMA", "STATUSES", "StepResult", "utc_now", "write_json_atomic", "RunRecord",
           "load_results", "count_statuses", "overall_status", "RESULTS_FILE", "INTERRUPTED_REASON"]

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

    def finish(self, *, interrupted: bool = False, **extra: Any) -> dict[str, Any]:
        with self._lock:
            self._data.update(extra)
            steps = self._ordered()
            self._data["status"] = overall_status(steps, finished=True, interrupted=interrupted)
            self._data["finished_at"] = utc_now()
            self._write()
            return dict(self._data)

    def _ordered(self) -> list[StepResult]:
        return sorted(self._steps.values(), key=lambda s: self._order.get(s.step, len(self._order)))

    def _write(self) -> None:
        steps = self._ordered()
        self._data["steps"] = [step.to_json() for step in steps]
        self._data["counts"] = count_statuses(steps)
        write_json_atomic(self.path, self._data)


def load_results(run_dir: Path) -> dict[str, Any]:
    """Read a run folder's results.json (raises InvalidInputError naming the file when unreadable)."""
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
