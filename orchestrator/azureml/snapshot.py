"""The code snapshots the pipeline's nodes run from.

Every notebook node shares ONE snapshot: the repository root (the nearest folder above the plan holding
`.git`, else the plan folder) plus the step scripts under `.orchestrator-runtime/steps/`. In a git work tree
it ships what git tracks, less `.amlignore` exclusions: git already decided what belongs to the code (a
tracked file matching a `.gitignore` pattern is code; an untracked file is not). Elsewhere the folder is
filtered by `.amlignore`/`.gitignore` files and a built-in list. Sharing one folder means it is hashed and uploaded once and
the reuse hash of every node depends on the same content (docs/azureml-sdk.md#code-snapshot, docs/azureml-sdk.md#pipeline-shape).

Why a staged copy instead of pointing `code=` at the repository: the step scripts live in the orchestrator,
not in the notebooks' repository, and a node's `code` is one folder. The copy is content-addressed
(`<cache>/<kind>-<digest>`), so compiling an unchanged repository twice reuses the same folder and gives
Azure ML the same snapshot hash, which keeps node reuse working (docs/azureml-sdk.md#reuse). The copy also applies ignore
files the way git does (nested `.gitignore` files too), where Azure ML reads only the root one (docs/azureml-sdk.md#code-snapshot);
an empty `.amlignore` written at the root of the copy stops Azure ML from filtering it a second time.

The report node gets a second, small snapshot: the step scripts and the orchestrator package (it builds the
report with the same code as a local run). Keeping the package out of the notebooks' snapshot means an
orchestrator upgrade does not change the notebook nodes' reuse hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from orchestrator.azureml.sdk import require

log = logging.getLogger("orchestrator.azureml")

RUNTIME_DIR = ".orchestrator-runtime"  # inside the notebooks' snapshot: the step scripts
MARKER = ".orchestrator-snapshot"  # in every staged folder; the walker never descends into one
DEFAULT_CACHE = Path(".orchestrator") / "azureml" / "snapshots"
KEEP_PER_KIND = 4  # staged snapshots kept per kind; older ones are pruned
# Above these, every submission and every step start gets slow (docs/azureml-sdk.md#code-snapshot, docs/azureml-sdk.md#pitfalls); worth a warning.
WARN_FILES = 2000
WARN_BYTES = 100 * 1024 * 1024
WARN_FILE_BYTES = 10 * 1024 * 1024  # one file this large is named even in a small snapshot

# Folders never shipped, at any depth: VCS data, the orchestrator's own run folders, caches, checkpoints.
IGNORED_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".orchestrator", ".venv", "venv", ".virtualenv", "__pycache__",
        ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox",
        ".hypothesis", "node_modules", ".idea", ".vscode", ".azureml", "mlruns",
    }
)  # fmt: skip
IGNORED_FILES = frozenset({".DS_Store", "Thumbs.db"})
IGNORED_SUFFIXES = (".pyc", ".pyo")
# A folder holding one of these is a virtualenv or conda environment, whatever its name.
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")


@dataclass(frozen=True)
class Snapshot:
    path: Path  # the staged folder to give as `code=`
    digest: str
    files: int
    bytes: int


def repository_root(plan_root: Path) -> Path:
    """The nearest folder at or above `plan_root` that holds `.git` (a folder, or a file for worktrees)."""
    start = plan_root.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


def default_cache(repo_root: Path) -> Path:
    return repo_root / DEFAULT_CACHE


# ------------------------------------------------------------------------------------------ ignore rules


class _IgnoreRules:
    """Git's ignore semantics over a tree: each folder's `.amlignore` (or else `.gitignore`) applies below
    it, deeper files win, the last matching pattern in a file wins, and an ignored folder is not entered
    (so nothing below it can be re-included, as in git)."""

    def __init__(self, names: tuple[str, ...] = (".amlignore", ".gitignore")) -> None:
        self._pathspec: Any = require("pathspec")
        self._names = names
        self._specs: dict[str, Any] = {}  # folder (root-relative posix, "" for the root) -> compiled spec

    def load(self, folder: Path, rel: str) -> None:
        for name in self._names:  # .amlignore takes precedence, as in azure-ai-ml
            path = folder / name
            if path.is_file():
                try:
                    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError as exc:
                    log.warning("cannot read %s (%s); ignoring it", path, exc)
                    return
                self._specs[rel] = self._pathspec.GitIgnoreSpec.from_lines(lines)
                return

    def ignored(self, rel: str, *, is_dir: bool) -> bool:
        parts = rel.split("/")
        # Deepest folder first: its rules override its parents'.
        for depth in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:depth])
            spec = self._specs.get(base)
            if spec is None:
                continue
            below = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(below)
            if result.include is not None:
                return bool(result.include)
        return False


def _builtin_ignored_dir(path: Path, name: str) -> bool:
    return name in IGNORED_DIRS or any((path / marker).exists() for marker in ENV_MARKERS) or (path / MARKER).exists()


def iter_files(root: Path) -> Iterator[tuple[Path, str]]:
    """(absolute path, root-relative posix path) of every file the snapshot ships, in a stable order.

    Symlinked files are followed (their content ships, as azure-ai-ml does); symlinked folders are not
    entered, so a link cycle cannot make the walk endless.
    """
    rules = _IgnoreRules()
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        rules.load(folder, rel)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            log.warning("cannot list %s (%s); skipping it", folder, exc)
            continue
        subfolders = []
        for entry in entries:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                if _builtin_ignored_dir(Path(entry.path), entry.name) or rules.ignored(child_rel, is_dir=True):
                    continue
                subfolders.append((Path(entry.path), child_rel))
            elif entry.is_file(follow_symlinks=True):
                if entry.name in IGNORED_FILES or entry.name.endswith(IGNORED_SUFFIXES):
                    continue
                if rules.ignored(child_rel, is_dir=False):
                    continue
                yield Path(entry.path), child_rel
        stack.extend(reversed(subfolders))


def _git_tracked(root: Path) -> list[str] | None:
    """The files git tracks under `root` (its work tree's top), or None when `root` is not a git work tree."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached"], capture_output=True,
                             timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return sorted({name for name in out.stdout.decode("utf-8", "surrogateescape").split("\0") if name})


def tracked_files(root: Path, tracked: list[str]) -> Iterator[tuple[Path, str]]:
    """What git tracks, less what `.amlignore` files exclude (nested ones too) and the built-in folders.

    Git decides the rest: a tracked file ships even when a `.gitignore` pattern matches it (git never ignores
    a tracked file: a tracked `run.sh` under `*.sh` is part of the code), and an untracked file never ships
    (a stray model file left in the work tree stays here)."""
    rules = _IgnoreRules(names=(".amlignore",))
    loaded: set[str] = set()
    for rel in tracked:
        parts = rel.split("/")
        folders = ["/".join(parts[:depth]) for depth in range(len(parts))]
        for folder in folders:
            if folder not in loaded:
                loaded.add(folder)
                rules.load(root / folder if folder else root, folder)
        if any(part in IGNORED_DIRS for part in parts[:-1]) or parts[-1] in IGNORED_FILES:
            continue
        if any(rules.ignored(folder, is_dir=True) for folder in folders[1:]) or rules.ignored(rel, is_dir=False):
            continue
        path = root / rel
        if path.is_file():  # a deleted file is still in the index; a submodule is a folder
            yield path, rel


# ---------------------------------------------------------------------------------------------- staging


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage(kind: str, files: list[tuple[Path, str]], cache: Path) -> Snapshot:
    """Copy `files` (source, destination relative path) into a content-addressed folder under `cache`.

    The folder name is a digest of every destination path and file content, so an unchanged tree maps to
    the folder staged before (no copy) and a changed one to a new folder; a folder is only ever complete,
    because it is built under a temporary name and renamed into place.
    """
    total = hashlib.sha256()
    size = 0
    for source, dest in sorted(files, key=lambda item: item[1]):
        total.update(dest.encode("utf-8") + b"\0" + _file_digest(source).encode("ascii") + b"\n")
        size += source.stat().st_size
    digest = total.hexdigest()[:20]
    target = cache / f"{kind}-{digest}"
    if not (target / MARKER).exists():
        cache.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=cache, prefix=f".{kind}-building-"))
        try:
            for source, dest in files:
                destination = building / dest
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
            # Already filtered: an empty .amlignore stops azure-ai-ml from applying the repository's root
            # .gitignore (copied along) a second time (azure/ai/ml/_utils/_asset_utils.py: get_ignore_file).
            (building / ".amlignore").write_text("# staged by orchestrator: already filtered\n", encoding="utf-8")
            (building / MARKER).write_text(digest + "\n", encoding="utf-8")
            if target.exists():  # an incomplete leftover (no marker), e.g. from a killed compile
                shutil.rmtree(target, ignore_errors=True)
            os.replace(building, target)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)
            if not (target / MARKER).exists():  # another compile staged the same content meanwhile: fine
                raise
        _prune(cache, kind, keep=target)
    _warn_if_large(kind, files, size)
    return Snapshot(path=target, digest=digest, files=len(files), bytes=size)


def _warn_if_large(kind: str, files: list[tuple[Path, str]], size: int) -> None:
    """A warning naming the largest files when the snapshot, or one file in it, is large: every submission
    uploads it and every node downloads it, and one stray data file is usually the cause."""
    sizes = sorted(((source.stat().st_size, dest) for source, dest in files), reverse=True)
    if len(files) <= WARN_FILES and size <= WARN_BYTES and (not sizes or sizes[0][0] <= WARN_FILE_BYTES):
        return
    largest = ", ".join(f"{dest} ({n / 1e6:.1f} MB)" for n, dest in sizes[:5])
    log.warning("snapshot %s holds %d files, %.0f MB; largest: %s. Large snapshots slow every submission and "
                "step start: list what the notebooks do not need in .amlignore", kind, len(files), size / 1e6, largest)


def _prune(cache: Path, kind: str, *, keep: Path) -> None:
    staged = sorted(
        (p for p in cache.glob(f"{kind}-*") if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in staged[KEEP_PER_KIND - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------- what ships


def _steps_dir() -> Path:
    import steps

    return Path(steps.__file__).resolve().parent


def _package_files(package_dir: Path, dest_prefix: str) -> list[tuple[Path, str]]:
    files = []
    for path in sorted(package_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in IGNORED_SUFFIXES:
            continue
        files.append((path, f"{dest_prefix}/{path.relative_to(package_dir).as_posix()}"))
    return files


def runtime_files(dest_prefix: str) -> list[tuple[Path, str]]:
    """The step scripts (steps/*.py): standard library + papermill/nbformat/mlflow only (docs/architecture.md#parts-and-data-flow)."""
    return [(path, f"{dest_prefix}/{path.name}") for path in sorted(_steps_dir().glob("*.py"))]


def notebook_snapshot(repo_root: Path, cache: Path) -> Snapshot:
    """The repository plus the step scripts under RUNTIME_DIR/steps: in a git work tree, what git tracks
    less `.amlignore` exclusions (`tracked_files`); elsewhere the folder filtered by its ignore files."""
    tracked = _git_tracked(repo_root)
    shipped = tracked_files(repo_root, tracked) if tracked is not None else iter_files(repo_root)
    files = [(path, rel) for path, rel in shipped if not rel.startswith(RUNTIME_DIR + "/")]
    files.extend(runtime_files(f"{RUNTIME_DIR}/steps"))
    return stage("notebooks", files, cache)


def report_snapshot(cache: Path) -> Snapshot:
    """The step scripts and the orchestrator package, for the report node."""
    import orchestrator

    files = runtime_files("steps")
    files.extend(_package_files(Path(orchestrator.__file__).resolve().parent, "orchestrator"))
    return stage("report", files, cache)
