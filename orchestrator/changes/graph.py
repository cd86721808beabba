"""From a notebook to the changed files it depends on, with the chain that leads there.

A notebook depends on: the repository modules it imports (found in the folders its kernel searches: the
notebook's own folder, the plan's `pythonpath`, folders it adds to `sys.path`, and the folders holding the
repository's own packages), transitively through those modules' imports; the scripts and notebooks it runs;
and the files and folders it names. Modules that are not files of the repository (the standard library,
installed packages) are not followed. What cannot be followed (an import computed at run time, a cell that
is not valid Python) is reported, and the notebook is selected to be safe.
"""

from __future__ import annotations

import posixpath
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path

from orchestrator.changes.code import WILD, Facts, Import, PathRef, analyse
from orchestrator.changes.git import Change
from orchestrator.changes.notebook import notebook_facts

_CODE = (".py", ".ipynb")


@dataclass
class RepoView:
    """The repository as the analysis sees it: its files now plus those the change deleted or renamed away
    (so an import of a deleted module still leads to that change), and the changes."""

    top: Path
    files: set[str]
    changes: dict[str, Change]
    show: Callable[[str], str]  # repository path -> as the reader knows it
    _facts: dict[str, tuple[Facts, str | None]] = field(default_factory=dict)
    resolved: dict[tuple[tuple[str, ...], str], list[str]] = field(default_factory=dict)  # (roots, module) -> files

    @cached_property
    def folders(self) -> set[str]:
        found = {"."}
        for path in self.files:
            parent = posixpath.dirname(path)
            while parent and parent not in found:
                found.add(parent)
                parent = posixpath.dirname(parent)
        return found

    @cached_property
    def package_roots(self) -> list[str]:
        """Folders holding a top-level package of the repository (`src/` in a src layout): importable once the
        repository is installed, whatever the plan's pythonpath says."""
        roots = set()
        for path in self.files:
            if posixpath.basename(path) == "__init__.py":
                package = posixpath.dirname(path) or "."
                parent = posixpath.dirname(package) or "."
                if package != "." and _join(parent, "__init__.py") not in self.files:
                    roots.add(parent)
        return sorted(roots)

    def facts(self, path: str) -> tuple[Facts, str | None]:
        if path not in self._facts:
            full = self.top / path
            if path.endswith(".ipynb"):
                self._facts[path] = notebook_facts(full)
            else:
                try:
                    text = full.read_text(encoding="utf-8", errors="replace")
                except OSError:  # deleted: nothing more to follow
                    self._facts[path] = (Facts(), None)
                else:
                    self._facts[path] = (analyse(text, "", file_name=posixpath.basename(path)), None)
        return self._facts[path]


def affecting_changes(view: RepoView, notebook: str, pythonpath: Iterable[str], extra: Iterable[PathRef] = (),
                      plan_root: str = ".") -> list[str]:
    """Reasons the notebook (repository path) is affected by the changes through what it uses, one per
    changed file (by the shortest chain found), in the order found."""
    return _Walk(view, notebook, list(pythonpath), plan_root).run(list(extra))


class _Walk:
    def __init__(self, view: RepoView, notebook: str, pythonpath: list[str], plan_root: str) -> None:
        self.view = view
        self.notebook = notebook
        self.home = posixpath.dirname(notebook) or "."
        self.plan_root = plan_root
        self.roots = list(dict.fromkeys([self.home, *pythonpath, *view.package_roots]))
        self.reasons: dict[str, str] = {}  # changed path (or a marker) -> reason
        self.seen: set[str] = {notebook}

    def run(self, extra: list[PathRef]) -> list[str]:
        facts, problem = self.view.facts(self.notebook)
        if problem is not None:
            self._unsure(f"{problem}, so what it uses is unknown")
            return list(self.reasons.values())
        queue: deque[tuple[str, Facts, tuple[str, ...]]] = deque([(self.notebook, facts, ())])
        for ref in extra:
            self._path(ref, self.notebook, (), queue)
        while queue:
            path, facts, chain = queue.popleft()
            self._add_roots(facts, path)
            for item in facts.imports:
                self._import(item, path, chain, queue)
            for ref in facts.paths:
                self._path(ref, path, chain, queue)
            for dynamic in facts.dynamic:
                self._dynamic(dynamic.prefix, self._where(path, dynamic.where), chain)
            for problem_text in facts.unreadable:
                self._unsure(_hops(chain, f"{self._where(path, problem_text)}, so what it uses is unknown"),
                             key=path + problem_text)
        return list(self.reasons.values())

    # -------------------------------------------------------------------------------------------- helpers

    def _where(self, path: str, where: str) -> str:
        return where if path == self.notebook else f"{self.view.show(path)} {where}"

    def _hit(self, changed: str, reason: str) -> None:
        self.reasons.setdefault(changed, f"{reason}: {self.view.changes[changed].describe(self.view.show)}")

    def _unsure(self, reason: str, key: str = "") -> None:
        """Something not followed: selected to be safe when anything changed at all."""
        if self.view.changes:
            self.reasons.setdefault("unsure:" + key, f"{reason}; selected to be safe")

    def _follow(self, path: str, hop: str, chain: tuple[str, ...],
                queue: deque[tuple[str, Facts, tuple[str, ...]]]) -> None:
        if path in self.view.changes:
            self._hit(path, _hops(chain, hop))
        if path not in self.seen and path.endswith(_CODE):
            self.seen.add(path)
            facts, problem = self.view.facts(path)
            if problem is not None:
                self._unsure(_hops((*chain, hop), f"{self.view.show(path)}: {problem}"), key=path)
            else:
                queue.append((path, facts, (*chain, hop)))

    def _add_roots(self, facts: Facts, path: str) -> None:
        """`sys.path.append("../src")` in a notebook adds a folder its imports are found in."""
        for ref in facts.paths:
            if ref.sys_path and not ref.computed:
                folder = _inside(_join(self.home, ref.pattern))
                if folder is not None and folder in self.view.folders and folder not in self.roots:
                    self.roots.append(folder)

    # -------------------------------------------------------------------------------------------- imports

    def _import(self, item: Import, path: str, chain: tuple[str, ...],
                queue: deque[tuple[str, Facts, tuple[str, ...]]]) -> None:
        where = self._where(path, item.where)
        if item.level:
            base = posixpath.dirname(path) or "."
            for _ in range(item.level - 1):
                base = posixpath.dirname(base) or "."
            start = _join(base, item.module.replace(".", "/")) if item.module else base
            modules = [(("." * item.level) + item.module, self._files_below(start))]
            names = [(f"{modules[0][0]}.{name}", self._files_below(_join(start, name))) for name in item.names]
        else:
            if not item.module:
                return
            modules = [(item.module, self._module_files(item.module))]
            names = [(f"{item.module}.{name}", self._module_files(f"{item.module}.{name}")) for name in item.names]
        for module, files in modules + [(name, files) for name, files in names if files]:
            for file in files:
                self._follow(file, f"imports {module} ({where})", chain, queue)

    def _module_files(self, module: str) -> list[str]:
        """The repository files `import module` executes (packages' __init__ first); [] when not ours."""
        key = (tuple(self.roots), module)  # notebooks of one folder share their roots, and most imports
        if key not in self.view.resolved:
            parts = module.split(".")
            found = next((self._walk_parts(root, parts) for root in self.roots
                          if _join(root, parts[0]) in self.view.folders
                          or _join(root, parts[0]) + ".py" in self.view.files), [])
            self.view.resolved[key] = found
        return self.view.resolved[key]

    def _walk_parts(self, root: str, parts: list[str]) -> list[str]:
        files, here = [], root
        for part in parts:
            here = _join(here, part)
            package = _join(here, "__init__.py")
            if package in self.view.files:
                files.append(package)
            elif here + ".py" in self.view.files:
                files.append(here + ".py")
                break  # what follows is an attribute of the module
            elif here not in self.view.folders:  # not a module: an attribute, or a missing name
                break
        return files

    def _files_below(self, start: str) -> list[str]:
        """The module a relative import names: start.py, or start/__init__.py."""
        for candidate in (start + ".py", _join(start, "__init__.py")):
            if candidate in self.view.files:
                return [candidate]
        return []

    def _dynamic(self, prefix: str, where: str, chain: tuple[str, ...]) -> None:
        if prefix:
            folders = [folder for root in self.roots
                       if (folder := _join(root, prefix.replace(".", "/"))) in self.view.folders]
            hits = [path for path in self.view.changes for folder in folders
                    if path.endswith(".py") and path.startswith(folder + "/")]
            for changed in hits:
                self._hit(changed, _hops(chain, f"imports a module of {prefix} named at run time ({where})"))
            if folders:
                return
        hits = [path for path in self.view.changes if path.endswith(".py")]
        for changed in hits:
            self._hit(changed, _hops(chain, f"imports a module named at run time ({where}), which could be any"))

    # ---------------------------------------------------------------------------------------------- paths

    def _path(self, ref: PathRef, path: str, chain: tuple[str, ...],
              queue: deque[tuple[str, Facts, tuple[str, ...]]]) -> None:
        text = ref.pattern.replace("\\", "/")
        if text.startswith(("/", "~")) or "://" in text or not any(char.isalnum() for char in text.replace(WILD, "")):
            return
        where = self._where(path, ref.where)
        bases = list(dict.fromkeys([posixpath.dirname(path) or ".", self.home, self.plan_root, "."]))
        if ref.computed:
            self._pattern(text, bases, where, chain)
            return
        verb = "runs" if ref.runs else "names"
        for base in bases:
            target = _inside(_join(base, text))
            if target is None:
                continue
            if target in self.view.files:
                self._follow(target, f"{verb} {text!r} ({where})", chain, queue)
                return
            if target in self.view.folders and not _contains(target, self.home):
                self._folder(target, f"names the folder {text!r} ({where})", chain)
                return

    def _folder(self, folder: str, hop: str, chain: tuple[str, ...]) -> None:
        # Code below a named folder is found through imports, and notebooks are steps of their own: a folder
        # reference stands for the data in it.
        for changed in self.view.changes:
            if changed.startswith(folder + "/") and not changed.endswith(_CODE):
                self._hit(changed, _hops(chain, hop))

    def _pattern(self, text: str, bases: list[str], where: str, chain: tuple[str, ...]) -> None:
        hop = f"names a path built at run time, {text!r} ({where})"
        if text.startswith(WILD):
            # Only the folder is computed: a file of that name anywhere could be it. A name that is computed
            # too, with only its extension known ('*.csv'), could be any such file: too little to go on.
            stem = posixpath.splitext(posixpath.basename(text))[0].replace(WILD, "")
            if not any(char.isalnum() for char in stem):
                return
            patterns = [text]
        else:
            patterns = [joined for base in bases if (joined := _inside(_join(base, text))) is not None]
        for changed in self.view.changes:
            if not changed.endswith(".ipynb") and any(fnmatchcase(changed, pattern) for pattern in patterns):
                self._hit(changed, _hops(chain, hop))


def _hops(chain: tuple[str, ...], last: str) -> str:
    return ", which ".join([*chain, last])


def _join(base: str, rest: str) -> str:
    return posixpath.normpath(posixpath.join(base, rest)) if base not in ("", ".") else posixpath.normpath(rest)


def _inside(path: str) -> str | None:
    """A repository path, or None when it leads out of the repository."""
    return None if path == ".." or path.startswith("../") or path.startswith("/") else path


def _contains(folder: str, path: str) -> bool:
    return folder == "." or path == folder or path.startswith(folder + "/")
