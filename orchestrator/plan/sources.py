"""Where a setting was written (the plan file at a key path, or a notebook's metadata), to word problems."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import Problem
from orchestrator.plan.messages import Loc, key_path
from orchestrator.plan.yaml_lines import YamlDocument


def display(path: Path) -> str:
    """A path as the user can click on it in a terminal: relative to the working folder when inside it."""
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Source:
    file: str  # as displayed
    document: YamlDocument | None = None  # the plan file's YAML, for line numbers; None for notebook JSON
    prefix: Loc = ()  # key path of this source's value in the file, e.g. ("notebooks", 3)

    def at(self, *loc: str | int) -> Source:
        return replace(self, prefix=(*self.prefix, *loc))

    def problem(self, message: str, *loc: str | int) -> Problem:
        full = (*self.prefix, *loc)
        location = self.document.where(full) if self.document is not None else key_path(full)
        return Problem(self.file, location, message)


_LINE = re.compile(r"^line (\d+)")


def in_file_order(problems: list[Problem], first_file: str) -> list[Problem]:
    """The plan file's problems first, by line; then each notebook's; the order found breaks ties."""

    def key(problem: Problem) -> tuple[bool, str, int]:
        match = _LINE.match(problem.location)
        return (problem.file != first_file, problem.file, int(match[1]) if match else 0)

    return sorted(problems, key=key)
