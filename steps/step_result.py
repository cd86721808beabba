"""The step result: what one notebook step ended as, the object behind `result.json`
(docs/architecture.md#step-result).

One typed model for every part that writes or reads a step result: the step runner writes it, the local
backend and the Azure ML collection record it in results.json, the report, the DevOps publisher, MLflow
logging and the trigger read it. `StepResult.from_json` is the one tolerant reader: results.json is read
mid-run, after a crash and from older versions, so any field may be missing, null or of the wrong type, and
reading never fails. Keys this version does not know are kept (`extra`) and written back unchanged.

Standard library only: it ships with the step scripts to every Azure ML node.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, get_args

try:
    from .ansi import strip_ansi
    from .atomic import write_json_atomic
except ImportError:  # imported from a step script run as `python steps/<script>.py`
    from ansi import strip_ansi  # type: ignore[no-redef]
    from atomic import write_json_atomic  # type: ignore[no-redef]

SCHEMA: Final = 1
RESULT_FILE: Final = "result.json"

# What a step ends as. A record read while the run is still going may also say "running" (the step has
# started) or "pending" (not yet: orchestrator/abandoned.py with_pending_steps); neither has finished.
Status = Literal["passed", "failed", "timed_out", "crashed", "error", "skipped"]
RecordedStatus = Literal[Status, "running", "pending"]
UNFINISHED: Final = ("running", "pending")
STATUSES: Final[tuple[Status, ...]] = get_args(Status)
NOT_PASSED: Final = frozenset({"failed", "timed_out", "crashed", "error"})

ErrorKind = Literal["cell_error", "expectation", "timeout", "kernel_died", "invalid_notebook", "no_kernel",
                    "infrastructure", "interrupted"]
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = get_args(ErrorKind)
# The one failure worth retrying: the kernel (or the node) never came up. A notebook's own error is
# deterministic, and retrying it only hides it (docs/architecture.md#retries).
TRANSIENT_KINDS: Final[frozenset[ErrorKind]] = frozenset({"infrastructure"})
# Seconds before attempt n+1 after a transient failure of attempt n: RETRY_BACKOFF_S * n. Long enough for a
# busy machine to settle, short next to a kernel start; the same locally and on an Azure ML node.
RETRY_BACKOFF_S: Final = 2.0
# Each kind -> the exception-like name a reader shows when the notebook gave no ename.
KIND_TYPES: Final[dict[ErrorKind, str]] = {
    "cell_error": "CellError", "expectation": "ExpectationMissed", "timeout": "Timeout",
    "kernel_died": "KernelDied", "invalid_notebook": "InvalidNotebook", "no_kernel": "NoSuchKernel",
    "infrastructure": "InfrastructureError", "interrupted": "Interrupted",
}


@dataclass(frozen=True)
class StepError:
    kind: ErrorKind | None  # None: a kind this version does not know
    cell_index: int | None = None  # 0-based in the source notebook (injected cells not counted)
    ename: str = ""
    evalue: str = ""
    traceback: str = ""  # ANSI stripped

    @property
    def type_name(self) -> str:
        """What a JUnit `type` attribute or a badge shows: the exception name, else the kind."""
        return self.ename or (KIND_TYPES[self.kind] if self.kind is not None else "Error")

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "cell_index": self.cell_index, "ename": self.ename, "evalue": self.evalue,
                "traceback": self.traceback}


@dataclass(frozen=True)
class Expectation:
    metric: str
    rule: str
    actual: Any
    ok: bool | None  # None: the step wrote no verdict

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "rule": self.rule, "actual": self.actual, "ok": self.ok}


class Timed:
    """A record with ISO 8601 `started_at`/`finished_at` text, read as aware datetimes (None when unreadable)."""

    started_at: str | None
    finished_at: str | None

    @property
    def started(self) -> datetime | None:
        return parse_time(self.started_at)

    @property
    def finished(self) -> datetime | None:
        return parse_time(self.finished_at)


@dataclass(frozen=True)
class StepResult(Timed):
    step: str  # the step id
    notebook: str  # relative to the plan's folder, forward slashes
    status: RecordedStatus
    started_at: str | None = None  # ISO 8601 UTC, as written
    finished_at: str | None = None
    duration_s: float | None = None
    attempts: int | None = 1  # 0: never started
    target: str | None = None
    environment: str | None = None
    kernel: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    error: StepError | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    expectations: tuple[Expectation, ...] = ()
    output_notebook: str | None = None  # file name in the step's folder
    warnings: tuple[str, ...] = ()
    output_tail: str = ""
    reason: str | None = None  # skipped: why
    carried_over_from: str | None = None  # a repair run kept this result from that run
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read

    # ---------------------------------------------------------------------------------------- reading

    @property
    def id(self) -> str:
        return self.step

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def not_passed(self) -> bool:
        return self.status in NOT_PASSED

    @property
    def finished_normally(self) -> bool:
        return self.status in STATUSES

    @property
    def transient_failure(self) -> bool:
        """An error worth another attempt (see TRANSIENT_KINDS)."""
        return self.status == "error" and self.error is not None and self.error.transient

    @property
    def folder(self) -> str:
        parent = PurePosixPath(self.notebook).parent.as_posix()
        return "" if parent == "." else parent

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.notebook).name or self.step

    @property
    def missed(self) -> list[Expectation]:
        return [e for e in self.expectations if e.ok is False]

    def but(self, **changes: Any) -> StepResult:
        """A copy with some fields changed (results are values: nobody edits one in place)."""
        return replace(self, **changes)

    # ----------------------------------------------------------------------------------------- JSON

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA, "step": self.step, "notebook": self.notebook, "status": self.status,
            "started_at": self.started_at, "finished_at": self.finished_at, "duration_s": self.duration_s,
            "attempts": self.attempts, "target": self.target, "environment": self.environment,
            "kernel": self.kernel, "parameters": self.parameters,
            "error": self.error.to_json() if self.error is not None else None,
            "metrics": self.metrics, "expectations": [e.to_json() for e in self.expectations],
            "output_notebook": self.output_notebook, "warnings": list(self.warnings),
            "output_tail": self.output_tail,
        }
        if self.reason is not None:
            data["reason"] = self.reason
        if self.carried_over_from is not None:
            data["carried_over_from"] = self.carried_over_from
        return {**self.extra, **data}

    @classmethod
    def from_json(cls, raw: Any, index: int = 0, *, step_id: str | None = None) -> StepResult:
        """The tolerant reader: never fails; a missing status reads as "error", a missing id as `step_id`,
        else step-N (N = index + 1), a missing notebook as the id."""
        data = as_dict(raw)
        step = str_or_none(data.get("step")) or step_id or f"step-{index + 1}"
        started_at, finished_at = str_or_none(data.get("started_at")), str_or_none(data.get("finished_at"))
        duration = _number(data.get("duration_s"))
        started, finished = parse_time(started_at), parse_time(finished_at)
        if duration is None and started is not None and finished is not None:
            duration = (finished - started).total_seconds()
        status = data.get("status")
        attempts = data.get("attempts")
        return cls(
            step=step,
            # Written with forward slashes by every backend; a backslash is part of a (POSIX) file name, kept.
            notebook=str_or_none(data.get("notebook")) or step,
            status=status if status in STATUSES or status in UNFINISHED else "error",
            started_at=started_at,
            finished_at=finished_at,
            duration_s=max(0.0, duration) if duration is not None else None,
            attempts=_int(attempts) if attempts is not None else None,
            target=str_or_none(data.get("target")),
            environment=str_or_none(data.get("environment")),
            kernel=str_or_none(data.get("kernel")),
            parameters=as_dict(data.get("parameters")),
            error=_error(data.get("error")),
            metrics=as_dict(data.get("metrics")),
            expectations=tuple(_expectation(e) for e in data.get("expectations") or [] if isinstance(e, dict)),
            output_notebook=str_or_none(data.get("output_notebook")),
            warnings=tuple(str(w) for w in data["warnings"]) if isinstance(data.get("warnings"), list) else (),
            output_tail=_text(data.get("output_tail")),
            reason=str_or_none(data.get("reason")),
            carried_over_from=str_or_none(data.get("carried_over_from") or data.get("carried_from")),
            extra={key: value for key, value in data.items() if key not in _KNOWN},
        )


_KNOWN = frozenset({"schema", "step", "notebook", "status", "started_at", "finished_at", "duration_s", "attempts",
                    "target", "environment", "kernel", "parameters", "error", "metrics", "expectations",
                    "output_notebook", "warnings", "output_tail", "reason", "carried_over_from", "carried_from"})


def retry_delay_s(result: StepResult | None, attempt: int, retries: int) -> float | None:
    """The one retry rule: seconds to wait before another attempt, or None when `result` is final.

    Only a transient failure is retried, at most `retries` times (so `retries + 1` attempts in all)."""
    if result is None or not result.transient_failure or attempt > retries:
        return None
    return RETRY_BACKOFF_S * attempt


def read_result_file(path: Path, *, step_id: str | None = None) -> StepResult | None:
    """The one result.json reader: a step folder's result.json (or the file itself); None when there is
    none or it is not a JSON object."""
    file = path / RESULT_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep to read
        return None
    return StepResult.from_json(data, step_id=step_id) if isinstance(data, dict) else None


def write_result_file(output_dir: Path, result: StepResult) -> None:
    """output_dir/result.json, written atomically."""
    write_json_atomic(Path(output_dir) / RESULT_FILE, result.to_json())


# -------------------------------------------------------------------------------------- tolerant parts


_TIME_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$", re.IGNORECASE
)


def utc_now() -> str:
    """The time format every result and run record uses."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def _error(raw: Any) -> StepError | None:
    if not isinstance(raw, dict):
        return None
    kind = raw.get("kind")
    return StepError(
        kind=kind if kind in ERROR_KINDS else None,
        cell_index=_int(raw.get("cell_index")),
        ename=str_or_none(raw.get("ename")) or "",
        evalue=strip_ansi(str_or_none(raw.get("evalue")) or ""),
        traceback=_text(raw.get("traceback")),
    )


def _expectation(raw: dict[str, Any]) -> Expectation:
    ok = raw.get("ok")
    return Expectation(metric=str_or_none(raw.get("metric")) or "?", rule=str_or_none(raw.get("rule")) or "",
                       actual=raw.get("actual"), ok=ok if isinstance(ok, bool) else None)


def str_or_none(value: Any) -> str | None:
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


def as_dict(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """Tracebacks arrive as a string (the step contract) or a list of lines (nbformat error outputs)."""
    if isinstance(value, list):
        value = "\n".join(str(line) for line in value)
    return strip_ansi(value) if isinstance(value, str) else ""
