"""kernel.log, bounded: the kernel writes to it directly (its stdout and stderr, C libraries, crash dumps),
so nothing the runner prints through limits it; these do.

- `LogCap` keeps the file under a limit while the kernel runs. The kernel's descriptor was opened with
  O_APPEND (steps/_kernel.py opens it "ab"), so the file can be cut back under the kernel's feet: its next
  write lands at the new end. What is kept is the start of the file (how the kernel started) and whatever
  was written since the last cut (how it ended), with a line saying how much was removed in between.
- `log_tail` reads the end of the file for an error's traceback, bounded whatever the kernel wrote (one line
  of 50 MB included).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

try:
    from .ansi import strip_ansi
except ImportError:  # run as a script: steps/ is on sys.path
    from ansi import strip_ansi  # type: ignore[no-redef]

LOG_LIMIT_BYTES = 5_000_000
LOG_HEAD_BYTES = 1_000_000
CHECK_INTERVAL_S = 0.5

_TAIL_LINES = 30  # of kernel.log, in the error of a kernel that died or did not start
_TAIL_LINE_CHARS = 500
_TAIL_BYTES = 64_000


class LogCap:
    """Holds one kernel.log under `limit` bytes (checked every CHECK_INTERVAL_S while `watch` runs, and once
    more by `check` when the kernel is gone)."""

    def __init__(self, path: Path, limit: int = LOG_LIMIT_BYTES, head: int = LOG_HEAD_BYTES) -> None:
        self.path = path
        self.limit = limit
        self.head = min(head, limit // 2)
        self.removed = 0  # bytes removed so far
        self._note_length = 0

    def check(self) -> None:
        try:
            size = self.path.stat().st_size
            if size <= self.limit:
                return
            with open(self.path, "r+b") as handle:
                # The previous note sits right after the head: it is replaced by one with the new total.
                self.removed += size - self.head - self._note_length
                handle.truncate(self.head)
            note = (f"\n[orchestrator] kernel.log is over its limit of {self.limit:,} bytes: {self.removed:,} bytes "
                    "removed here; what follows is the end of the log\n").encode()
            with open(self.path, "ab") as handle:
                handle.write(note)
            self._note_length = len(note)
        except OSError:  # the folder went away, a read-only file: the log is not worth failing the step
            return

    async def watch(self) -> None:
        """Checks until cancelled."""
        while True:
            self.check()
            await asyncio.sleep(CHECK_INTERVAL_S)


def log_tail(path: Path, max_lines: int = _TAIL_LINES, line_chars: int = _TAIL_LINE_CHARS) -> str:
    """The last lines of kernel.log for an error's traceback, bounded however the kernel wrote it: only the
    file's last _TAIL_BYTES are read, and a line longer than `line_chars` keeps its start and its end."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > _TAIL_BYTES and lines:
        lines[0] = f"[...] {lines[0]}"  # the read began inside this line
    return "\n".join(_shorten(strip_ansi(line), line_chars) for line in lines[-max_lines:])


def _shorten(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    half = (limit - 40) // 2
    return f"{line[:half]} [... {len(line) - 2 * half} characters ...] {line[-half:]}"
