"""The code of a notebook, as Python the static analysis can read.

IPython syntax (`%run x.py`, `!pip install`, `x = !ls`, `%%bash` cells, `obj?`) is not Python; IPython's own
input transformer (the one the kernel applies before running a cell) turns it into the calls it stands for,
`get_ipython().run_line_magic('run', 'x.py')`, which `code.py` understands. Shell lines and non-Python cell
magics thereby become strings, never code to parse.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestrator.changes.code import Facts, analyse, parse_quietly, string_constants


def notebook_facts(path: Path) -> tuple[Facts, str | None]:
    """(the facts of the notebook's code cells, None) or (empty facts, why it cannot be analysed)."""
    try:
        with path.open("rb") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        return Facts(), f"it cannot be read ({type(error).__name__})"
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        return Facts(), "it is not a notebook (no cells)"
    language = _language(document.get("metadata"))
    if language.lower() not in ("python", "ipython", "ipython3"):
        return Facts(), f"its language is {language}, and only Python code is analysed"
    transform = _transformer()
    cells: list[tuple[str, str]] = []
    for number, cell in enumerate(document["cells"], start=1):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            source = cell.get("source", "")
            text = "".join(source) if isinstance(source, list) else str(source)
            cells.append((f"cell {number}", transform(text)))
    # A name bound once anywhere in the notebook (usually the parameters cell) is known in every cell.
    trees = [tree for _, text in cells if (tree := parse_quietly(text)) is not None]
    constants = string_constants(trees)
    facts = Facts()
    for where, text in cells:
        facts.extend(analyse(text, where, constants=constants))
    return facts, None


def _language(metadata: Any) -> str:
    if not isinstance(metadata, dict):
        return "python"
    for key, field in (("kernelspec", "language"), ("language_info", "name")):
        section = metadata.get(key)
        if isinstance(section, dict) and isinstance(section.get(field), str) and section[field].strip():
            return str(section[field]).strip()
    return "python"  # no kernelspec: the orchestrator runs it with the default Python kernel


@lru_cache(maxsize=1)
def _transformer() -> Callable[[str], str]:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # IPython comes with ipykernel; without it, magic and shell lines are dropped
        return _drop_magics
    manager = TransformerManager()  # type: ignore[no-untyped-call]

    def transform(text: str) -> str:
        try:
            return str(manager.transform_cell(text))
        except Exception:  # noqa: BLE001 - IPython's transformer fails on some invalid input; keep our own
            return _drop_magics(text)

    return transform


def _drop_magics(text: str) -> str:
    if text.lstrip().startswith("%%"):
        return ""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.splitlines())
