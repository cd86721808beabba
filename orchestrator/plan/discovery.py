"""Finding the notebooks under a plan root, skipping folders that are never part of a notebook repository."""

from __future__ import annotations

import os
from pathlib import Path

# Folders that hold copies, environments or our own run output, never notebooks to run. Hidden folders
# (".git", ".ipynb_checkpoints", ".orchestrator", ".venv", ...) are skipped by their leading dot.
IGNORED_FOLDERS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})


def find_notebooks(root: Path) -> list[str]:
    """Every *.ipynb under `root`, as root-relative posix paths, sorted."""
    found: list[str] = []
    # os.walk with in-place pruning: one directory listing per kept folder, nothing read below ignored ones;
    # it does not follow folder symlinks, so a link loop cannot hang the plan.
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not _ignored(folder, name)]
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        found.extend(prefix + name for name in files if name.endswith(".ipynb") and not name.startswith("."))
    return sorted(found)


def _ignored(parent: str, name: str) -> bool:
    if name.startswith(".") or name in IGNORED_FOLDERS:
        return True
    # A virtualenv of any name (env/, py311/, ...) has pyvenv.cfg at its top.
    return os.path.exists(os.path.join(parent, name, "pyvenv.cfg"))
