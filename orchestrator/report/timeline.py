"""Layout of the report's timeline: one row per notebook, a bar from its start to its end, relative to the
run's start, on an axis with round tick marks. Pure arithmetic, so the template only places boxes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.results import RunResults
from steps.step_result import StepResult

# Tick spacings a person reads at a glance, in seconds.
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_TICKS = 8


@dataclass(frozen=True)
class Bar:
    left: float  # percent of the axis
    width: float  # percent of the axis
    open: bool  # no finish time yet: drawn to "now" (or the run's end) and marked as such
    start_s: float  # seconds after the run started
    end_s: float


@dataclass(frozen=True)
class Row:
    step: StepResult
    bar: Bar | None
    note: str  # why there is no bar


@dataclass(frozen=True)
class Tick:
    left: float
    label: str


@dataclass(frozen=True)
class Timeline:
    rows: list[Row]
    ticks: list[Tick]
    span_s: float
    origin: datetime | None


def build_timeline(run: RunResults, now: datetime) -> Timeline:
    # Results carried over by a repair run ran during the earlier run: placing them here would stretch
    # the axis back by hours or days, so they get a row with a note instead of a bar.
    timed = [s for s in run.steps if s.started is not None and s.carried_over_from is None]
    starts = [s.started for s in timed if s.started is not None]
    # The earliest of the run's start and its steps' starts: on Azure ML the run record and the steps are
    # stamped by different machines, and a bar must never start left of the axis.
    candidates = [t for t in (run.started, *starts) if t is not None]
    origin = min(candidates) if candidates else None
    if origin is None:
        return Timeline([Row(s, None, _no_bar_note(s)) for s in run.steps], [], 0.0, None)

    known_ends = [t for t in [run.finished, *starts, *(s.finished for s in timed)] if t is not None]
    latest = max(known_ends, default=origin)  # no step has finished, and the run has no end yet
    open_end = now if run.status == "running" else (run.finished or latest)
    end = max(latest, open_end if any(s.finished is None for s in timed) else latest)
    span = max((end - origin).total_seconds(), 1.0)

    rows = []
    for step in run.steps:
        if step.started is None or step.carried_over_from is not None:
            rows.append(Row(step, None, _no_bar_note(step)))
            continue
        start_s = (step.started - origin).total_seconds()
        finish = step.finished or open_end
        end_s = min(span, max(start_s, (finish - origin).total_seconds()))
        bar = Bar(100 * start_s / span, 100 * (end_s - start_s) / span, step.finished is None, start_s, end_s)
        rows.append(Row(step, bar, ""))
    return Timeline(rows, _ticks(span), span, origin)


def _no_bar_note(step: StepResult) -> str:
    if step.carried_over_from is not None:
        return f"carried over from run {step.carried_over_from}"
    if step.status == "skipped":
        return "skipped"
    return "did not start"


def _ticks(span: float) -> list[Tick]:
    step = next((s for s in _TICK_STEPS if span / s <= MAX_TICKS), None)
    if step is None:  # longer than 8 days: whole days
        step = 86400 * int(span // (86400 * MAX_TICKS) + 1)
    ticks = []
    at = 0
    while at <= span + 1e-9:
        ticks.append(Tick(100 * at / span, offset_label(at)))
        at += step
    return ticks


def offset_label(seconds: float) -> str:
    """0, 45s, 2m, 1m30s, 1h, 1h15m, 2d: short enough to sit under a tick mark."""
    total = int(round(seconds))
    if total == 0:
        return "0"
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return "".join(shown[:2])
