"""A forgiving, typed view of results.json for the report writers.

The report is built at the end of every run, but also mid-run and after a crash, from whatever
results.json holds then (DESIGN 5). So every field may be missing, null or of the wrong type; this module
is the one place that copes, and the writers downstream can trust what they get.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from orchestrator.results import STATUSES, count_statuses
from orchestrator.report.text import strip_ansi

# Error kinds (DESIGN 4) -> the exception-like type a reader shows when the notebook gave no ename.
KIND_TYPES = {
    "cell_error": "CellError",
    "expectation": "ExpectationMissed",
    "timeout": "Timeout",
    "kernel_died": "KernelDied",
    "invalid_notebook": "InvalidNotebook",
    "no_kernel": "NoSuchKernel",
    "infrastructure": "InfrastructureError",
    "interrupted": "Interrupted",
}

_TIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string, or None.

    Python 3.10's fromisoformat rejects "Z" and fractions that are not 3 or 6 digits, both of which other
    writers (Azure ML, hand-edited files) produce, hence the regex. A time without offset is taken as UTC.
    """
    if not isinstance(value, str):
        return None
    match = _TIME_RE.match(value.strip())
    if match is None:
        return None
    day, clock, fraction, offset = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    if offset is None or offset.upper() == "Z":
        offset = "+00:00"
    elif ":" not in offset:
        offset = f"{offset[:3]}:{offset[3:]}"
    try:
        return datetime.fromisoformat(f"{day}T{clock}.{micro}{offset}").astimezone(timezone.utc)
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None  # NaN and Infinity (json reads both) are no duration


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _dict(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """Tracebacks arrive as a string (the step contract) or a list of lines (nbformat error outputs)."""
    if isinstance(value, list):
        value = "\n".join(str(line) for line in value)
    return strip_ansi(value) if isinstance(value, str) else ""


@dataclass(frozen=True)
class Expectation:
    metric: str
    rule: str
    actual: Any
    ok: bool | None  # None: the step wrote no verdict


@dataclass(frozen=True)
class StepError:
    kind: str | None
    cell_index: int | None
    ename: str | None
    evalue: str | None
    traceback: str

    @property
    def type_name(self) -> str:
        """What a JUnit `type` attribute or a badge shows: the exception name, else the kind."""
        if self.ename:
            return self.ename
        return KIND_TYPES.get(self.kind or "", self.kind or "Error")


@dataclass(frozen=True)
class Step:
    id: str
    notebook: str  # path relative to the plan's folder, forward slashes; the step id when unknown
    status: str
    started: datetime | None
    finished: datetime | None
    duration_s: float | None
    attempts: int | None
    target: str | None
    environment: str | None
    kernel: str | None
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    expectations: list[Expectation]
    error: StepError | None
    output_notebook: str | None
    warnings: list[str]
    reason: str | None
    output_tail: str
    carried_from: str | None  # the run a repair run took this result from

    @property
    def finished_normally(self) -> bool:
        return self.status in STATUSES

    @property
    def folder(self) -> str:
        parent = PurePosixPath(self.notebook).parent.as_posix()
        return "" if parent == "." else parent

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.notebook).name or self.id

    @property
    def missed(self) -> list[Expectation]:
        return [e for e in self.expectations if e.ok is False]


@dataclass(frozen=True)
class Run:
    run_id: str
    backend: str | None
    experiment: str
    status: str
    started: datetime | None
    finished: datetime | None
    repairs: str | None
    steps: list[Step]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def wall_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, (self.finished - self.started).total_seconds())


def read_step(raw: Any, index: int) -> Step:
    data = _dict(raw)
    step_id = _str(data.get("step")) or f"step-{index + 1}"
    started = parse_time(data.get("started_at"))
    finished = parse_time(data.get("finished_at"))
    duration = _number(data.get("duration_s"))
    if duration is None and started is not None and finished is not None:
        duration = (finished - started).total_seconds()
    error_data = data.get("error")
    error = None
    if isinstance(error_data, dict):
        error = StepError(
            kind=_str(error_data.get("kind")),
            cell_index=_int(error_data.get("cell_index")),
            ename=_str(error_data.get("ename")),
            evalue=strip_ansi(_str(error_data.get("evalue")) or "") or None,
            traceback=_text(error_data.get("traceback")),
        )
    expectations = [
        Expectation(
            metric=_str(e.get("metric")) or "?",
            rule=_str(e.get("rule")) or "",
            actual=e.get("actual"),
            ok=e.get("ok") if isinstance(e.get("ok"), bool) else None,
        )
        for e in data.get("expectations") or []
        if isinstance(e, dict)
    ]
    warnings = data.get("warnings")
    return Step(
        id=step_id,
        # Written with forward slashes by every backend; a backslash is part of a (POSIX) file name, kept as is.
        notebook=_str(data.get("notebook")) or step_id,
        # A step without a status is counted as an error by results.count_statuses; agree with it.
        status=_str(data.get("status")) or "error",
        started=started,
        finished=finished,
        duration_s=max(0.0, duration) if duration is not None else None,
        attempts=_int(data.get("attempts")),
        target=_str(data.get("target")),
        environment=_str(data.get("environment")),
        kernel=_str(data.get("kernel")),
        parameters=_dict(data.get("parameters")),
        metrics=_dict(data.get("metrics")),
        expectations=expectations,
        error=error,
        output_notebook=_str(data.get("output_notebook")),
        warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
        reason=_str(data.get("reason")),
        output_tail=_text(data.get("output_tail")),
        carried_from=_str(data.get("carried_over_from") or data.get("carried_from")),
    )


def read_run(results: Any) -> Run:
    data = _dict(results)
    raw_steps = data.get("steps")
    steps = [read_step(raw, i) for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else [])]
    return Run(
        run_id=_str(data.get("run_id")) or "unknown",
        backend=_str(data.get("backend")),
        experiment=_str(data.get("experiment")) or "notebooks",
        status=_str(data.get("status")) or "unknown",
        started=parse_time(data.get("started_at")),
        finished=parse_time(data.get("finished_at")),
        repairs=_str(data.get("repairs")),
        steps=steps,
        # Counted again from the steps, not read from "counts": a partial file may hold stale counts,
        # and the summary must agree with the table below it.
        counts=count_statuses([{"status": s.status} for s in steps]),
    )
