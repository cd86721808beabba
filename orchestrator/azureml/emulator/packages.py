"""Does a node's environment provide what its step imports? Checked before the node runs.

On the service, a step whose environment lacks a package dies at import with ModuleNotFoundError, after an
image build and a compute start. The emulator cannot build the image, so it reads what the image would hold
(the conda file's conda and pip dependencies) and what the step imports: every `import` in the scripts the
command runs with `python`, following the modules that ship in the code snapshot, at module level and inside
functions (a lazy import fails as surely, only later). An import guarded by `except ImportError` (or
ModuleNotFoundError) is optional by design and not required.

Module -> distribution comes from this machine's installed packages (importlib.metadata), plus the few names
conda spells differently from pip.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shlex
import sys
import threading
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

# Same module, other distribution names (conda's spelling, or a slimmer build of the same package).
ALIASES: dict[str, frozenset[str]] = {
    "mlflow": frozenset({"mlflow", "mlflow-skinny"}),
    "torch": frozenset({"torch", "pytorch"}),
}
NAMESPACES = frozenset({"azure", "google"})  # namespace packages: the subpackage names the distribution
_SPEC_NAME = re.compile(r"^(?:[A-Za-z0-9_.\-]+::)?([A-Za-z0-9_.\-]+)")
# Nodes start in threads, and CPython 3.11's ast.parse is not safe to call from two threads at once
# ("SystemError: AST constructor recursion depth mismatch").
_PARSE_LOCK = threading.Lock()
# Every node of a job checks the same snapshot at the same moment: what each file imports is read once per
# content (the snapshot's copies in each node's folder are equal), and the installed distributions once per
# process, under a lock (lru_cache alone let five threads each scan them, 0.5 CPU-s apiece).
_DISTRIBUTIONS_LOCK = threading.Lock()
_READ_SCRIPTS: dict[bytes, tuple[tuple[str, ...], frozenset[str]]] = {}
_OPTIONAL_ERRORS = frozenset({"ImportError", "ModuleNotFoundError"})


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared(conda: Mapping[str, Any] | None) -> set[str]:
    """Normalized names of every conda and pip dependency of a conda file."""
    names: set[str] = set()
    for dependency in (conda or {}).get("dependencies") or []:
        specs: Iterable[Any] = dependency.get("pip") or [] if isinstance(dependency, dict) else [dependency]
        for spec in specs:
            text = str(spec).strip()
            if not text or text.startswith(("-", "git+", "http:", "https:", "file:")):
                continue
            found = _SPEC_NAME.match(text.split("@")[0].split("[")[0])
            if found:
                names.add(normalize(found.group(1)))
    return names


def _distributions() -> dict[str, list[str]]:
    with _DISTRIBUTIONS_LOCK:
        return _installed_distributions()


@lru_cache(maxsize=1)
def _installed_distributions() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def distributions_of(module: str) -> frozenset[str]:
    """The distributions that provide `module` (a top-level name, or a namespace package's subpackage)."""
    if module in ALIASES:
        return ALIASES[module]
    if "." in module:  # azure.keyvault.secrets -> azure-keyvault-secrets
        return frozenset({normalize(module)})
    return frozenset(normalize(d) for d in _distributions().get(module, [module]))


def _requirement(module: str) -> str:
    """The name an import is checked by: its top-level module, or for a namespace package (azure.*) the
    longest dotted prefix that names an installed distribution."""
    parts = module.split(".")
    if parts[0] not in NAMESPACES:
        return parts[0]
    for depth in range(len(parts), 1, -1):
        candidate = ".".join(parts[:depth])
        try:
            metadata.distribution(normalize(candidate))
        except metadata.PackageNotFoundError:
            continue
        return candidate
    return ".".join(parts[:2])


# ------------------------------------------------------------------------------------------- the imports


def _optional(handlers: list[ast.ExceptHandler]) -> bool:
    for handler in handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in _OPTIONAL_ERRORS for k in kinds):
            return True
    return False


def _imports(tree: ast.AST) -> list[str]:
    """Absolute module names imported anywhere in `tree`, except under an `except ImportError` or an
    `if TYPE_CHECKING:` (imports for the type checker only, never run)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            for branch in node.orelse:
                visit(branch)
            return
        if isinstance(node, ast.Try) and _optional(node.handlers):
            for kept in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(kept)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _script_names(tree: ast.AST) -> set[str]:
    """Bare `.py` file names written as string constants (scripts this one runs)."""
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.endswith(".py") and "/" not in node.value and len(node.value) < 100}


def _local_files(module: str, roots: Iterable[Path]) -> list[Path] | None:
    """The files of `module` (its packages' __init__ too) in the snapshot, or None when it does not ship."""
    parts = module.split(".")
    for root in roots:
        if not ((root / parts[0]).is_dir() or (root / f"{parts[0]}.py").is_file()):
            continue
        files = []
        for depth in range(1, len(parts) + 1):
            base = root.joinpath(*parts[:depth])
            if (base / "__init__.py").is_file():
                files.append(base / "__init__.py")
            elif base.with_suffix(".py").is_file():
                files.append(base.with_suffix(".py"))
        return files
    return None


def scripts_of(command: str, cwd: Path) -> list[Path]:
    """The Python files a command runs: `python FILE` and `python -m MODULE` (found under `cwd`)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    found = []
    for index, word in enumerate(words[:-1]):
        if Path(word).name not in ("python", "python3"):
            continue
        following = words[index + 1]
        if following == "-m" and index + 2 < len(words):
            found.extend(_local_files(words[index + 2], [cwd]) or [])
        elif following.endswith(".py") and (cwd / following).is_file():
            found.append(cwd / following)
    return found


def third_party_imports(scripts: list[Path], code_root: Path) -> dict[str, str]:
    """Module -> the file that imports it, for modules that do not ship in the snapshot.

    A script that names a sibling `.py` file in a string runs it (steps/azureml_step.py runs
    steps/run_notebook.py as a subprocess, which no import shows): that file counts as the step's too."""
    seen: set[Path] = set()
    external: dict[str, str] = {}
    queue = list(scripts)
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            imports, script_names = _read_script(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        roots = [code_root, path.parent]
        queue.extend(path.parent / name for name in script_names if (path.parent / name).is_file())
        for module in imports:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            local = _local_files(module, roots)
            if local is not None:
                queue.extend(local)
            else:
                where = path.relative_to(code_root) if path.is_relative_to(code_root) else path
                external.setdefault(_requirement(module), str(where))
    return external


def _read_script(source: bytes) -> tuple[tuple[str, ...], frozenset[str]]:
    """What a Python file imports and the sibling scripts it names, by its content (its digest is the key: the
    sources themselves are not kept)."""
    key = hashlib.sha256(source).digest()
    found = _READ_SCRIPTS.get(key)
    if found is None:
        with _PARSE_LOCK:
            tree = ast.parse(source)
        found = _READ_SCRIPTS[key] = (tuple(_imports(tree)), frozenset(_script_names(tree)))
    return found


def missing_packages(command: str, code_root: Path, conda: Mapping[str, Any] | None) -> dict[str, str]:
    """Module -> importing file, for each module the step imports that the environment does not declare."""
    have = declared(conda)
    imported = third_party_imports(scripts_of(command, code_root), code_root)
    return {module: where for module, where in sorted(imported.items()) if not distributions_of(module) & have}
