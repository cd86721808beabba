"""Paths and globs in a plan: relative to the plan root, forward slashes, never escaping the root.

Globs follow the pathlib convention users know: `*` and `?` stay inside one folder, `**` spans folders,
and a pattern that names a folder (`examples/scratch`, `examples/scratch/**`) covers every notebook below it
(docs/architecture.md#plan-file: `glob: "examples/scratch/**"` skips that whole folder).
"""

from __future__ import annotations

import posixpath
import re
from functools import lru_cache

_GLOB_CHARS = re.compile(r"[*?\[]")


def inside_root(text: str) -> str:
    """`text` normalised to a root-relative posix path ("." for the root); ValueError if it escapes."""
    # Backslashes: plans written on Windows; the result is used in posix form everywhere (plan.json, AML).
    path = text.strip().replace("\\", "/")
    if not path:
        raise ValueError("expected a path relative to the plan folder, got an empty string")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"expected a path relative to the plan folder, got the absolute path {text!r}")
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"expected a path inside the plan folder, got {text!r}, which leads out of it")
    return normal


def relative_file(text: str) -> str:
    """A file named relative to the plan folder that may lie outside it (a conda file shared by several
    notebook repositories: it is read where the pipeline is compiled, never shipped with the notebooks)."""
    path = text.strip().replace("\\", "/")
    if not path:
        raise ValueError("expected a path relative to the plan folder, got an empty string")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"expected a path relative to the plan folder, got the absolute path {text!r}")
    return posixpath.normpath(path)


def is_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS.search(pattern))


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching root-relative posix paths that `pattern` names, or that lie below a folder it names."""
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    regex = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment(part) + ("" if last else "/")
    if parts and not is_glob(parts[-1]):
        # A literal last part may name a folder: `examples/scratch` covers the notebooks below it. A wildcard
        # last part (`examples/*`) keeps pathlib's meaning: direct children only.
        regex += "(?:/.*)?"
    return re.compile(f"^{regex}$")


def _segment(part: str) -> str:
    out = ""
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := part.find("]", i + 2)) != -1:
            body = part[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out += "[" + body.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out


def glob_match(pattern: str, paths: list[str]) -> list[str]:
    """The paths (in their given order) that `pattern` names."""
    regex = glob_regex(pattern)
    return [path for path in paths if regex.match(path)]
