"""A forgiving, typed view of results.json for the report writers.

The report is built at the end of every run, but also mid-run and after a crash, from whatever
results.json holds then (docs/architecture.md#run-folder). So every field may be missing, null or of the
wrong type; this module (for the run) and StepResult.from_json (for each step) cope, and the writers
downstream can trust what they get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.results import count_statuses
from steps.step_result import StepResult, as_dict, parse_time, str_or_none


@dataclass(frozen=True)
class Run:
    run_id: str
    backend: str | None
    experiment: str
    status: str
    started: datetime | None
    finished: datetime | None
    repairs: str | None
    steps: list[StepResult]  # read with StepResult.from_json, the one tolerant reader
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def wall_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, (self.finished - self.started).total_seconds())


def read_run(results: Any) -> Run:
    data = as_dict(results)
    raw_steps = data.get("steps")
    steps = [StepResult.from_json(raw, i) for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else [])]
    return Run(
        run_id=str_or_none(data.get("run_id")) or "unknown",
        backend=str_or_none(data.get("backend")),
        experiment=str_or_none(data.get("experiment")) or "notebooks",
        status=str_or_none(data.get("status")) or "unknown",
        started=parse_time(data.get("started_at")),
        finished=parse_time(data.get("finished_at")),
        repairs=str_or_none(data.get("repairs")),
        steps=steps,
        # Counted again from the steps, not read from "counts": a partial file may hold stale counts,
        # and the summary must agree with the table below it.
        counts=count_statuses(steps),
    )
