"""Text clean-up shared by the progress view, the DevOps task log and the JUnit and HTML writers: ANSI colours,
XML-invalid characters, size limits, durations. Outside the report package so that the progress view, on every
run's critical path, does not load the report's templates (jinja2) before the first kernel starts."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from steps.ansi import strip_ansi as strip_ansi  # the one ANSI rule, for the writers that import it from here

# Everything outside XML 1.0's Char production (https://www.w3.org/TR/xml/#charsets). A single one makes
# the whole junit.xml unreadable to the DevOps agent ("FailedToReadFile"), and tracebacks carry \x08 or
# \x1b easily (progress bars, terminal output).
_XML_INVALID_RE = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_name(name: str) -> str:
    """A file name as one readable line: backslashes doubled and control characters (a newline, an ESC) as
    Python escapes, so 'a\\nb.ipynb' and a name holding a real newline stay different, and neither breaks a
    line-based log."""
    return one_line(name.replace("\\", "\\\\"))


def one_line(text: str) -> str:
    """`text` with every control character written as an escape (\\n, \\x1b): one line, nothing a terminal or
    a log parser acts on."""
    return _CONTROL_RE.sub(_escape_control, text)


def _escape_control(match: re.Match[str]) -> str:
    return match[0].encode("unicode_escape").decode("ascii")


def xml_safe(text: str) -> str:
    return _XML_INVALID_RE.sub("", strip_ansi(text))


def truncate_middle(text: str, limit: int, where: str = "") -> str:
    """Keep the head (which cell, which call) and the longer tail (the exception itself) of a traceback."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head
    note = f"\n\n[... {len(text) - limit} characters cut{'; full text in ' + where if where else ''} ...]\n\n"
    return text[:head] + note + text[-tail:]


def truncate_tail(text: str, limit: int) -> str:
    """Keep the end of printed output: the last lines before a failure are the telling ones."""
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters cut ...]\n" + text[-limit:]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def show_value(value: Any) -> str:
    """A metric or parameter as a person (or a JUnit property) reads it: strings bare, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return json.dumps(value, ensure_ascii=False, default=str)


def show_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"
