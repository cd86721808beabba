"""Wording of plan problems: key paths, "did you mean", and pydantic errors rewritten as "expected X, got Y".

Pydantic's own messages ("Input should be a valid integer") name neither the key nor what the user wrote;
a data scientist reading a CI log needs both, in YAML terms (mapping, list, true/false, null).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

# What each pydantic error type expected, in the words of a YAML author.
_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "string_too_short": "a non-empty string",
}


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, for "got ..." in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def key_path(loc: Loc) -> str:
    """("notebooks", 3, "timeout") -> "notebooks[3].timeout"; odd keys quoted: targets["my gpu"]."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def did_you_mean(word: str, choices: Sequence[str], *, list_choices: bool = True, cutoff: float = 0.6) -> str:
    """A hint to append to a message: " (did you mean 'timeout'?)" when a choice is close, else
    "; expected one of: a, b, c" (or nothing when the choices are too many to list, such as notebooks)."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if choices and list_choices:
        return f"; expected one of: {', '.join(choices)}"
    return ""


def describe(error: ErrorDetails, model: type[BaseModel]) -> tuple[Loc, str]:
    """Where a pydantic error is (relative to `model`'s input) and what it says, in plan terms."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    got = show(error.get("input"))
    if loc and loc[-1] == "[key]":  # a mapping key of the wrong type, e.g. `parameters: {1: x}`
        loc = loc[:-2]
        what = _EXPECTED.get(kind, "a string")
        return loc, f"expected keys to be {what}, got {show(error['loc'][-2])}"
    if kind == "extra_forbidden":
        key = str(loc[-1])
        return loc, f"unknown key {key!r}{did_you_mean(key, keys_at(model, loc[:-1]))}"
    if kind == "missing":
        return loc, f"missing required key {str(loc[-1])!r}"
    if kind in ("value_error", "assertion_error"):
        # Our validators already word their messages as "expected ..., got ...".
        return loc, str(error.get("ctx", {}).get("error", error["msg"]))
    if kind == "literal_error":
        return loc, f"expected {error.get('ctx', {}).get('expected')}, got {got}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(error.get("ctx", {}).values()), "?")
        return loc, f"expected a number {bounds[kind]} {limit}, got {got}"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {got}"
    return loc, f"{error['msg']}, got {got}"


def keys_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys allowed at `loc` inside `model`'s input (for "did you mean"); [] when unknown."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]  # the item / value type
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] so the walk sees the model or container inside."""
    if get_origin(annotation) in (Union, types.UnionType):
        inner = [arg for arg in get_args(annotation) if arg is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation
