"""Builders for test notebooks: tiny, generated in tmp folders, named for the behaviour they exercise
(docs/architecture.md#tiny-named-test-data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def make_notebook(
    path: Path,
    *cells: str,
    parameters: str | None = None,
    kernel: str | None = "python3",
    metadata: dict[str, Any] | None = None,
    markdown_first: str | None = None,
) -> Path:
    """Write a notebook whose code cells are `cells`.

    parameters: source of a cell tagged `parameters`, placed first (papermill's convention).
    kernel: the kernelspec name; None writes a notebook with no kernelspec at all.
    metadata: merged into the notebook metadata (e.g. {"orchestrator": {"target": "gpu"}}).
    """
    nb = new_notebook()
    if markdown_first is not None:
        nb.cells.append(new_markdown_cell(markdown_first))
    if parameters is not None:
        nb.cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(new_code_cell(source) for source in cells)
    if kernel is not None:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.metadata.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def glue_source(name: str, value: Any) -> str:
    """Cell source that records a metric the way scrapbook's `glue` does, without needing scrapbook."""
    return (
        "from IPython.display import display\n"
        f"display({{'application/scrapbook.scrap.json+json': "
        f"{{'name': {name!r}, 'data': {value!r}, 'encoder': 'json', 'version': 1}}}}, "
        f"metadata={{'scrapbook': {{'name': {name!r}, 'data': True, 'display': False}}}}, raw=True)"
    )
