"""Atomic writes for report files: the report is rebuilt while a run goes on, and a reader (a browser, the
DevOps agent) must never see a half-written junit.xml or report.html."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp creates files readable by the owner only; a report is meant to be shared like any file.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def executed_notebook(run_dir: Path, step_id: str, output_notebook: str | None) -> Path | None:
    """Where a step's executed notebook lives: run_dir/steps/<id>/<name>.ipynb.

    None unless both parts are plain names: results.json is read mid-run and from copied run folders,
    and a stray "../" must not make the report write its HTML rendering outside the run folder.
    """
    if not output_notebook or not output_notebook.endswith(".ipynb"):
        return None
    for part in (step_id, output_notebook):
        if part in ("", ".", "..") or "/" in part or "\\" in part:
            return None
    return run_dir / "steps" / step_id / output_notebook
