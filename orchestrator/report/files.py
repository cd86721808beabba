"""Where a step's files are in a run folder, and the atomic writer for report files (the report is rebuilt
while a run goes on, and a reader, a browser or the DevOps agent, must never see a half-written one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.atomic import write_atomic

__all__ = ["executed_notebook", "template_cache", "write_atomic"]


def template_cache() -> Any:
    """jinja2's compiled-template cache in its own per-user folder (0700, checked to be this user's, under the
    temporary folder), or None where jinja2 finds no safe one. Compiling nbconvert's templates and the report's
    takes 0.06 to 0.1 CPU-s in every run that writes pages; read back from the cache, a few milliseconds. Entries
    are keyed by the template's name and checked against its source, and written by rename."""
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):  # RuntimeError: jinja2 found the folder unsafe (another owner, a link)
        return None


def executed_notebook(run_dir: Path, step_id: str, output_notebook: str | None) -> Path | None:
    """Where a step's executed notebook lives: run_dir/steps/<id>/<name>.ipynb.

    None unless both parts are plain names: results.json is read mid-run and from copied run folders,
    and a stray "../" must not make the report write its HTML rendering outside the run folder.
    """
    if not output_notebook or not output_notebook.endswith(".ipynb"):
        return None
    separators = {"/", os.sep, os.altsep or "/"}  # a backslash is a separator on Windows only
    for part in (step_id, output_notebook):
        if part in ("", ".", "..") or any(sep in part for sep in separators):
            return None
    return run_dir / "steps" / step_id / output_notebook
