"""A command node's command line as the service runs it: bindings substituted, optional blocks resolved.

- `${{inputs.X}}` becomes the input's value: a literal as text, a data input as the local path it is mounted
  at; `${{outputs.X}}` becomes the output folder's path (Learn: reference-yaml-component-command, "command").
- `$[[ ... ]]` encloses an optional part: it is kept, without the brackets, when every input named inside it
  has a value, and dropped when one has none (same page; azure-ai-ml validates the brackets in
  entities/_validation and the component's command).
The result runs with bash, in the node's working directory (the code snapshot).
"""

from __future__ import annotations

import re
from typing import Mapping

_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.S)
_REFERENCE = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_]+)\s*\}\}")


class CommandError(ValueError):
    """The command names an input or output the node does not have: the service refuses such a node."""


def render(command: str, inputs: Mapping[str, str | None], outputs: Mapping[str, str]) -> str:
    """`inputs`: name -> value, None for an optional input without one; `outputs`: name -> folder."""

    def present(part: str) -> bool:
        return all(inputs.get(name) is not None for kind, name in _REFERENCE.findall(part) if kind == "inputs")

    kept = _OPTIONAL.sub(lambda m: m.group(1) if present(m.group(1)) else "", command)

    def value(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        found = (inputs if kind == "inputs" else outputs).get(name)
        if found is None:
            raise CommandError(f"${{{{{kind}.{name}}}}} has no value (an input used outside $[[...]] must be given)")
        return found

    return _REFERENCE.sub(value, kept)
