"""ANSI escape removal: the one rule for every traceback and log tail the orchestrator stores or shows.

IPython colours tracebacks; kernels and progress bars write cursor moves and terminal titles. Removed:
CSI sequences (colours, cursor moves: ESC [ ... final byte), OSC strings (terminal titles, hyperlinks:
ESC ] ... ended by BEL or ESC \\) and the other two-character escapes (ESC followed by one byte in @-Z, \\-_).
Sources: ECMA-48 sections 5.4 and 8.3.89 (the control sequence and OSC syntax), as docs/architecture.md
notes. Standard library only: the step runner and the report node both use it.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)
