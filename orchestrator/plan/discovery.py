"""Finding the notebooks under a plan root, skipping folders that are never part of a notebook repository."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

# Folders that hold copies, environments or our own run output, never notebooks to run. Hidden folders
# (".git", ".ipynb_checkpoints", ".orchestrator", ".venv", ...) are skipped by their leading dot.
IGNORED_FOLDERS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})
# Written at the top of every run folder (orchestrator/run_folder.py): a run folder anywhere under the root
# (`--out results/`) holds executed copies of the notebooks, which must never be found as notebooks to run.
RUN_MARKER = ".orchestrator-run"


class Found(NamedTuple):
    notebooks: list[str]  # root-relative posix paths, sorted
    skipped: list[str]  # why a *.ipynb was left out (a link leading out of the root, not a regular file)


def find_notebooks(root: Path) -> Found:
    """Every *.ipynb under `root` that is a regular file inside it (after following links)."""
    real_root = root.resolve()
    found: list[str] = []
    skipped: list[str] = []
    # os.walk with in-place pruning: one directory listing per kept folder, nothing read below ignored ones;
    # it does not follow folder symlinks, so a link loop cannot hang the plan.
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not _ignored(folder, name)]
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        for name in files:
            if not name.endswith(".ipynb") or name.startswith("."):
                continue
            # os.walk never enters a linked folder, so only the file itself can be a link here.
            why = outside_or_not_a_file(root, prefix + name, real_root, folders_checked=True)
            if why:
                skipped.append(f"{prefix + name!r} skipped: {why}")
            else:
                found.append(prefix + name)
    return Found(sorted(found), skipped)


def outside_or_not_a_file(
    root: Path, relative: str, real_root: Path | None = None, *, folders_checked: bool = False
) -> str | None:
    """Why `root/relative` cannot be run as a notebook of this plan, or None. Checked on the resolved path:
    `path: ../x` is refused as text, and a symlink must not lead to the same place."""
    full = root / relative
    linked = full.is_symlink() or (not folders_checked and any(p.is_symlink() for p in _parents_below(root, relative)))
    if not linked:
        return None if full.is_file() else "not a regular file"
    target = full.resolve()
    if not target.is_relative_to(real_root or root.resolve()):
        return f"it leads through a symbolic link to {target}, outside the plan folder"
    return None if target.is_file() else "not a regular file"


def folder_outside(root: Path, relative: str) -> str | None:
    """Why folder `root/relative` (a pythonpath entry) is not inside the plan folder once links are followed."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        return f"it leads through a symbolic link to {target}, outside the plan folder"
    return None


def _parents_below(root: Path, relative: str) -> list[Path]:
    parts = Path(relative).parts[:-1]
    return [root.joinpath(*parts[: index + 1]) for index in range(len(parts))]


def _ignored(parent: str, name: str) -> bool:
    if name.startswith(".") or name in IGNORED_FOLDERS:
        return True
    # A virtualenv of any name (env/, py311/, ...) has pyvenv.cfg at its top; a run folder has our marker.
    return os.path.exists(os.path.join(parent, name, "pyvenv.cfg")) or os.path.exists(
        os.path.join(parent, name, RUN_MARKER)
    )
