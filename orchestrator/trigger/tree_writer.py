"""One commit's files written into a folder, from a dulwich object store: the checkout step of a git-less
fetch. The tree comes from a repository a queue message named, so it is written defensively:

- a path with an empty, `.` or `..` component, a `.git` component (any case), a backslash or a NUL is
  refused, so nothing is written outside the folder or into git's own metadata;
- symbolic links become plain files holding the link's target (git's `core.symlinks=false`): no link is
  ever created, so no later write or read can be led outside the folder;
- submodules (gitlinks) become empty folders; their content is not fetched;
- the total size is bounded (ORCHESTRATOR_MAX_REPOSITORY_BYTES).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.trigger.git_transport import too_large

_GITLINK = 0o160000


def _safe_parts(path: bytes) -> list[str]:
    text = path.decode("utf-8", errors="surrogateescape")
    parts = text.split("/")
    bad = (not text or "\\" in text or "\x00" in text
           or any(part in ("", ".", "..") or part.lower() == ".git" for part in parts))
    if bad:
        raise InvalidInputError([Problem("message", "body.repository", (
            f"the commit holds a path that cannot be checked out safely: {text[:200]!r}"))])
    return parts


def write_tree(store: Any, tree_id: Any, folder: Path, max_bytes: int) -> tuple[int, list[Any]]:
    """Write the tree `tree_id` of `store` into the existing empty `folder`; returns the bytes written and
    the entries written as files (for the index)."""
    from dulwich.object_store import iter_tree_contents

    total = 0
    written = []
    for entry in iter_tree_contents(store, tree_id):
        parts = _safe_parts(entry.path)
        target = folder.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.mode == _GITLINK:
            target.mkdir(exist_ok=True)
            continue
        data = store[entry.sha].as_raw_string()
        total += len(data)
        if total > max_bytes:
            raise too_large(f"the checkout is larger than {max_bytes} bytes")
        executable = not stat.S_ISLNK(entry.mode) and bool(entry.mode & 0o111)
        # O_EXCL and O_NOFOLLOW: a path written twice, or anything already there, is an error, never followed.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                     0o755 if executable else 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        written.append(entry)
    return total, written


def write_index(repo: Any, folder: Path, entries: list[Any]) -> None:
    """The index of a fresh checkout, so that git (when there is one: orchestrator.changes) sees a clean
    working tree. Links are recorded as links with `core.symlinks=false`, as git itself does on such a tree."""
    from dulwich.index import index_entry_from_stat

    config = repo.get_config()
    config.set((b"core",), b"symlinks", False)
    config.write_to_path()
    index = repo.open_index()
    for entry in entries:
        index[entry.path] = index_entry_from_stat(os.lstat(folder.joinpath(*_safe_parts(entry.path))), entry.sha,
                                                  mode=entry.mode)
    index.write()
