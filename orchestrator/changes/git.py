"""What changed since a ref, read from git: the merge base, the changed files (renames and deletions named),
the files there are now, and files as they were at the base.

"Now" is the working tree, not HEAD: a pull request build checks out the merge commit, and a person trying the
selection locally expects uncommitted edits and new untracked files to count too.
"""

from __future__ import annotations

import posixpath
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InvalidInputError, Problem

FETCH_ADVICE = ("fetch the history it needs: in Azure Pipelines set `fetchDepth: 0` on the checkout step, "
                "or run `git fetch --deepen=100` (or `git fetch --unshallow`)")


@dataclass(frozen=True)
class Change:
    """One changed file, repository-relative. `status`: added | modified | deleted | renamed."""

    path: str
    status: str
    other: str | None = None  # a rename's other side
    old_side: bool = False  # this is the path a rename left

    def describe(self, show: Callable[[str], str]) -> str:
        """'data/a.csv changed', 'pkg/old.py renamed to pkg/new.py'; `show` turns a repository path into the
        form the reader knows (relative to the plan folder)."""
        if self.status == "renamed" and self.other is not None:
            return f"{show(self.path)} renamed {'to' if self.old_side else 'from'} {show(self.other)}"
        return f"{show(self.path)} {'changed' if self.status == 'modified' else self.status}"


class Git:
    """git commands in one repository; failures become InvalidInputError naming the command's subject."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        top = self._run("rev-parse", "--show-toplevel", check=False)
        if top.returncode != 0:
            raise InvalidInputError([Problem(str(folder), "--changed-since",
                                             "not inside a git repository; change-aware selection needs one")])
        self.top = Path(top.stdout.strip()).resolve()
        # Every later command runs at the top: `ls-files` lists paths relative to (and only below) its folder.
        self.folder = self.top

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["git", "-c", "core.quotePath=false", *args], cwd=self.folder, capture_output=True,
                              text=True, encoding="utf-8", errors="surrogateescape", check=False,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise InvalidInputError([Problem(str(self.folder), f"git {args[0]}",
                                             "; ".join(lines[-3:]) or f"exit {done.returncode}")])
        return done

    def shallow(self) -> bool:
        return self._run("rev-parse", "--is-shallow-repository").stdout.strip() == "true"

    def resolve(self, ref: str) -> str:
        """The commit `ref` names. A pull request's target arrives as refs/heads/<branch>
        ($(System.PullRequest.TargetBranch)), which a CI checkout has only as origin/<branch>."""
        candidates = [ref]
        if ref.startswith("refs/heads/"):
            candidates.append("refs/remotes/origin/" + ref.removeprefix("refs/heads/"))
        elif not ref.startswith(("refs/", "-")):
            candidates.append(f"refs/remotes/origin/{ref}")
        for candidate in candidates:
            if candidate.startswith("-"):
                break
            found = self._run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}",
                              check=False)
            if found.returncode == 0:
                return found.stdout.strip()
        message = f"unknown ref {ref!r}: not a commit, branch or tag of {self.top}"
        if self.shallow():
            message += f"; this is a shallow clone, which may not have it: {FETCH_ADVICE}, and fetch that branch"
        raise InvalidInputError([Problem("--changed-since", ref, message)])

    def merge_base(self, ref: str, commit: str) -> str:
        head = self._run("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
        if head.returncode != 0:
            raise InvalidInputError([Problem(str(self.top), "--changed-since", "the repository has no commit yet")])
        found = self._run("merge-base", commit, head.stdout.strip(), check=False)
        if found.returncode == 0:
            return found.stdout.strip()
        if self.shallow():
            message = (f"no merge base with {ref!r} in this shallow clone: its history stops before the commit "
                       f"this branch shares with {ref}; {FETCH_ADVICE}")
        else:
            message = f"HEAD and {ref!r} share no history (no merge base)"
        raise InvalidInputError([Problem("--changed-since", ref, message)])

    def changes(self, base: str) -> dict[str, Change]:
        """Every file changed between `base` and the working tree, untracked files included; a rename is
        listed under both its paths."""
        out = self._run("diff", "--name-status", "-z", "--find-renames", "--no-ext-diff", "--no-textconv",
                        base, "--").stdout
        fields = out.split("\0")
        changes: dict[str, Change] = {}
        index = 0
        while index < len(fields) - 1:
            code = fields[index]
            if code.startswith(("R", "C")):
                old, new = fields[index + 1], fields[index + 2]
                index += 3
                if code.startswith("C"):
                    changes[new] = Change(new, "added")
                    continue
                changes[new] = Change(new, "renamed", other=old)
                changes[old] = Change(old, "renamed", other=new, old_side=True)
                continue
            path = fields[index + 1]
            index += 2
            status = {"A": "added", "D": "deleted"}.get(code[:1], "modified")
            changes[path] = Change(path, status)
        for path in self._z("ls-files", "--others", "--exclude-standard"):
            changes.setdefault(path, Change(path, "added"))
        return changes

    def files_now(self) -> set[str]:
        """Files of the working tree git knows of or would (tracked and untracked, not ignored)."""
        return set(self._z("ls-files", "--cached", "--others", "--exclude-standard"))

    def files_at(self, commit: str) -> list[str]:
        return self._z("ls-tree", "-r", "-z", "--name-only", "--full-tree", commit)

    def read_at(self, commit: str, paths: list[str]) -> dict[str, bytes]:
        """The contents of `paths` at `commit` (one `git cat-file --batch` for all of them)."""
        if not paths:
            return {}
        request = "".join(f"{commit}:{path}\n" for path in paths).encode("utf-8", "surrogateescape")
        done = subprocess.run(["git", "cat-file", "--batch"], cwd=self.folder, input=request, capture_output=True,
                              check=False)
        data, position, contents = done.stdout, 0, {}
        for path in paths:
            end = data.index(b"\n", position)
            header = data[position:end].split()
            position = end + 1
            if len(header) < 3 or header[1] != b"blob":
                continue
            size = int(header[2])
            contents[path] = data[position:position + size]
            position += size + 1
        return contents

    def _z(self, *args: str) -> list[str]:
        command = list(args) if "-z" in args else [*args, "-z"]
        return [name for name in self._run(*command).stdout.split("\0") if name]

    def relative(self, path: Path) -> str:
        """`path` relative to the repository top, posix form ('.' for the top)."""
        return posixpath.normpath(path.resolve().relative_to(self.top).as_posix())
