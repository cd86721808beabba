"""Reading a JSON input file a user handed us, with the errors every command gives for one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInputError, Problem


def read_json_object(path: Path, *, expected: str = "a JSON object") -> dict[str, Any]:
    """The file's top-level object; InvalidInputError naming the file when it is missing, not JSON, or not
    an object (`expected` says what it should have been)."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError([Problem(where, "", "not found")]) from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError([Problem(where, "", f"cannot be read as JSON ({exc})")]) from None
    return parse_json_object(text, where, expected=expected)


def parse_json_object(text: str, where: str, *, expected: str = "a JSON object") -> dict[str, Any]:
    """`text`'s top-level object; InvalidInputError naming `where` (a file, standard input) otherwise."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError([Problem(where, "", f"cannot be read as JSON ({exc})")]) from None
    if not isinstance(data, dict):
        raise InvalidInputError([Problem(where, "", f"expected {expected}")])
    return data
