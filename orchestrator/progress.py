"""Progress of a run as it happens: a live view on a terminal, plain one-line events otherwise.

Backends call a `Progress`; they never print. The plain form is what a CI log wants (one line per event,
`step=... status=... secs=...`, docs/architecture.md#one-named-logger); the live form is what a person at a terminal
wants (counts, and which notebooks are running and for how long).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO, cast

from orchestrator.text import escape_name, one_line
from steps.step_result import STATUSES, StepResult


class Progress(Protocol):
    def run_started(self, run_id: str, total: int, run_dir: str) -> None: ...
    def step_started(self, step_id: str, notebook: str, attempt: int) -> None: ...
    def step_finished(self, result: StepResult) -> None: ...
    def message(self, text: str) -> None: ...
    def run_finished(self, status: str, counts: dict[str, int], seconds: float) -> None: ...


def _summary(counts: dict[str, int]) -> str:
    return " ".join(f"{status}={counts[status]}" for status in STATUSES if counts.get(status))


class _LineSink:
    """A text stream that hands each complete, non-blank line to `emit`."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self._emit(line)
        return len(text)

    def flush(self) -> None:
        pass


class PlainProgress:
    """One line per event, flushed at once so CI logs stream."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()

    @classmethod
    def to_lines(cls, emit: Callable[[str], None]) -> PlainProgress:
        """The same lines, each handed to `emit` (a logger, the DevOps live feed) instead of a stream."""
        return cls(cast(TextIO, _LineSink(emit)))

    def _line(self, text: str) -> None:
        with self._lock:
            try:
                # One event, one line, whatever a notebook's name or error holds: a newline in either could
                # otherwise forge a `step=... status=passed` line, or a `##vso[` command on a DevOps agent.
                self._stream.write(one_line(text) + "\n")
                self._stream.flush()
            except OSError:  # the terminal was closed (SIGHUP) or the pipe's reader is gone: keep running
                pass

    def run_started(self, run_id: str, total: int, run_dir: str) -> None:
        self._line(f"run={run_id} steps={total} folder={run_dir}")

    def step_started(self, step_id: str, notebook: str, attempt: int) -> None:
        retry = f" attempt={attempt}" if attempt > 1 else ""
        self._line(f"step={step_id} status=running notebook={escape_name(notebook)}{retry}")

    def step_finished(self, result: StepResult) -> None:
        status = result.status
        secs = result.duration_s or 0.0
        detail = ""
        error = result.error
        if status == "skipped":
            detail = f" reason={result.reason or ''!r}"
        elif error is not None:
            where = f" cell={error.cell_index}" if error.cell_index is not None else ""
            what = ": ".join(part for part in (error.ename, error.evalue) if part)
            detail = f"{where} error={what or error.kind!r}"
        self._line(f"step={result.step} status={status} secs={secs:.1f}{detail}")

    def message(self, text: str) -> None:
        self._line(text)

    def run_finished(self, status: str, counts: dict[str, int], seconds: float) -> None:
        self._line(f"run status={status} secs={seconds:.1f} {_summary(counts)}")


class LiveProgress:
    """A rich live view: counts per status, then each running notebook with its elapsed time."""

    RECENT_PROBLEMS = 5  # shown under the running notebooks; all of them are printed when the run ends
    _STYLE = {"passed": "green", "failed": "red", "timed_out": "magenta", "crashed": "red",
              "error": "red", "skipped": "yellow"}

    def __init__(self, stream: TextIO | None = None, *, expected: Mapping[str, float] | None = None,
                 slots: int = 1) -> None:
        from rich.console import Console
        from rich.live import Live

        # The real stderr, bound now: Live swaps sys.stderr for a proxy that prints through this console, and a
        # console that looked sys.stderr up at each write would feed its own output back into itself.
        self._console = Console(file=stream or sys.stderr)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, float, int]] = {}
        self._counts: dict[str, int] = {status: 0 for status in STATUSES}
        self._problems: list[str] = []  # one line per notebook that did not pass, in finishing order
        self._total = 0
        self._started = time.monotonic()
        self._time_left = TimeLeft(expected or {}, slots)
        self._live = Live(console=self._console, refresh_per_second=4, transient=True, get_renderable=self.render)

    def render(self) -> Any:
        """What the live view shows now (a rich renderable)."""
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            done = sum(self._counts.values())
            header = Text(f"{done}/{self._total} done  running={len(self._running)}  ")
            for status in STATUSES:
                if self._counts[status]:
                    header.append(f"{status}={self._counts[status]} ", style=self._STYLE[status])
            now = time.monotonic()
            header.append(f" {now - self._started:.0f}s", style="dim")
            left = self._time_left.estimate({step: since for step, (_nb, since, _a) in self._running.items()}, now)
            if left is not None:
                header.append(f"  ~{_clock(left)} left", style="dim")
            table = Table.grid(padding=(0, 2))
            for notebook, since, attempt in sorted(self._running.values(), key=lambda item: item[1]):
                retry = f" (attempt {attempt})" if attempt > 1 else ""
                table.add_row(Text("▶", style="cyan"), Text(notebook + retry), Text(f"{now - since:5.0f}s", style="dim"))
            recent = [Text.from_markup(line, overflow="ellipsis") for line in self._problems[-self.RECENT_PROBLEMS:]]
        for text in recent:
            text.no_wrap = True
        grid = Table.grid()
        grid.add_row(header)
        grid.add_row(table)
        for line in recent:
            grid.add_row(line)
        return grid

    def run_started(self, run_id: str, total: int, run_dir: str) -> None:
        self._total = total
        self._time_left.planned(total)
        self._console.print(f"[bold]run[/] {run_id}: {total} notebooks -> {run_dir}")
        self._live.start()

    def step_started(self, step_id: str, notebook: str, attempt: int) -> None:
        with self._lock:
            self._running[step_id] = (notebook, time.monotonic(), attempt)

    def step_finished(self, result: StepResult) -> None:
        from rich.markup import escape

        status = result.status
        line = None
        if status != "passed":
            error = result.error
            what = result.reason or (": ".join(p for p in (error.ename, error.evalue) if p) if error else "")
            kind = error.kind if error is not None and error.kind is not None else ""
            line = (f"[{self._STYLE.get(status, 'red')}]{status:>9}[/] "
                    f"{escape(result.notebook)}  {escape(what or kind)}")
        with self._lock:
            self._running.pop(result.step, None)
            self._time_left.finished(result.step)
            self._counts[status] = self._counts.get(status, 0) + 1
            if line is not None:
                self._problems.append(line)

    def message(self, text: str) -> None:
        from rich.markup import escape

        if not self._live.is_started:  # before or without a live view (an Azure ML job only submitted)
            self._console.print(text, markup=False, highlight=False)
            return
        with self._lock:
            self._problems.append(f"[dim]{escape(text)}[/]")

    def run_finished(self, status: str, counts: dict[str, int], seconds: float) -> None:
        # Nothing is printed above the live view while it runs (rich leaves stale frames behind when lines
        # are printed between refreshes); every line that mattered is printed once it is gone.
        self._live.stop()
        for line in self._problems:
            self._console.print(line, no_wrap=True, overflow="ellipsis")
        style = "green" if status == "passed" else "red"
        self._console.print(f"[{style}]run {status}[/] in {seconds:.1f}s  {_summary(counts)}")


class TimeLeft:
    """An estimate of the time a run has left, from the run history's expected durations.

    Work left = the expected time of every notebook not started, plus what the running ones are expected to
    still need; spread over the slots. Rough on purpose: it says "about 4 minutes", not a finish time. A
    notebook the history does not know counts as a typical one (the median of those it knows); with nothing
    known there is no estimate.
    """

    def __init__(self, expected: Mapping[str, float], slots: int) -> None:
        self._expected = dict(expected)
        self._typical = statistics.median(expected.values()) if expected else 0.0
        self._slots = max(1, slots)
        self._done: set[str] = set()
        self._total: int | None = None

    def planned(self, total: int) -> None:
        self._total = total

    def finished(self, step_id: str) -> None:
        self._done.add(step_id)

    def estimate(self, running_since: Mapping[str, float], now: float) -> float | None:
        if not self._expected:
            return None
        unknown = max(0, (self._total or len(self._expected)) - len(self._expected.keys() | self._done | set(running_since)))
        waiting = sum(secs for step, secs in self._expected.items() if step not in self._done and step not in running_since)
        waiting += unknown * self._typical
        running = [max(0.0, self._expected.get(step, self._typical) - (now - since)) for step, since in running_since.items()]
        # The longest running notebook bounds the end from below, however many slots are free.
        return max(max(running, default=0.0), (waiting + sum(running)) / self._slots)


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60:02d}s"


class TeeProgress:
    """Every event to several progress sinks (the terminal and, with --devops, the server job's feed)."""

    def __init__(self, *sinks: Progress) -> None:
        self._sinks = sinks

    def run_started(self, run_id: str, total: int, run_dir: str) -> None:
        for sink in self._sinks:
            sink.run_started(run_id, total, run_dir)

    def step_started(self, step_id: str, notebook: str, attempt: int) -> None:
        for sink in self._sinks:
            sink.step_started(step_id, notebook, attempt)

    def step_finished(self, result: StepResult) -> None:
        for sink in self._sinks:
            sink.step_finished(result)

    def message(self, text: str) -> None:
        for sink in self._sinks:
            sink.message(text)

    def run_finished(self, status: str, counts: dict[str, int], seconds: float) -> None:
        for sink in self._sinks:
            sink.run_finished(status, counts, seconds)


def make_progress(stream: TextIO | None = None, *, expected: Mapping[str, float] | None = None,
                  slots: int = 1) -> Progress:
    """Live view on a terminal, plain lines otherwise (CI logs, pipes, files). `expected` (step id ->
    seconds, from the run history) and `slots` (notebooks at once) give the live view its time left."""
    target = stream or sys.stderr
    if target.isatty():
        return LiveProgress(target, expected=expected, slots=slots)
    return PlainProgress(target)
