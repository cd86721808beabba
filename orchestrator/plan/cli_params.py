"""`--param NAME=VALUE`: typed exactly as papermill's `-p` types it, so a papermill user is never surprised.

papermill (papermill/cli.py, `_resolve_type`): the texts True, False and None become those values; a text
Python's int() reads becomes an int, else one float() reads becomes a float; anything else stays a string.
So `0123` is 123 (never octal), `1e3` is 1000.0, `yes`, `on`, `null` and `2026-01-01` are strings, and no
YAML is parsed (no dates, no aliases). One deliberate difference: an integer longer than Python's int()
limit (4,300 digits) is refused instead of silently becoming float('inf').
"""

from __future__ import annotations

import keyword
from collections.abc import Sequence
from typing import Any

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.limits import MAX_PARAMETERS_BYTES, json_size, too_big


def parse_cli_parameters(values: Sequence[str]) -> dict[str, Any]:
    """{name: value} for `--param` texts; InvalidInputError listing every bad one."""
    params: dict[str, Any] = {}
    problems: list[Problem] = []
    for raw in values:
        name, sep, text = raw.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or keyword.iskeyword(name):
            problems.append(Problem("--param", repr(raw), "expected NAME=VALUE with NAME a Python identifier"))
            continue
        try:
            params[name] = resolve_type(text)
        except ValueError as error:
            problems.append(Problem("--param", repr(name), str(error)))
    if not problems and json_size(params, MAX_PARAMETERS_BYTES) > MAX_PARAMETERS_BYTES:
        problems.append(Problem("--param", "", too_big("the parameters", MAX_PARAMETERS_BYTES)))
    if problems:
        raise InvalidInputError(problems)
    return params


def resolve_type(text: str) -> Any:
    """papermill's `_resolve_type`, refusing an integer too long for int() rather than making it a float."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError as error:
        if "digits" in str(error) and _looks_like_int(text):
            raise ValueError("expected an integer of at most 4300 digits (Python's limit for int())") from None
    try:
        return float(text)
    except ValueError:
        return text


def _looks_like_int(text: str) -> bool:
    body = text.strip().lstrip("+-").replace("_", "")
    return body.isdigit()
