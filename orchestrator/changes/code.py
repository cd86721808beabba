"""What a piece of Python code depends on, found statically: the modules it imports, the files it names, the
scripts and notebooks it runs, and the imports it computes at run time (which cannot be followed).

Nothing is executed or imported. Paths built from parts are followed as far as the parts are written down:
`Path("data") / "train.csv"`, `os.path.join(DATA, "x.csv")` with `DATA = "data"` assigned once, and
f"data/{split}.csv", which becomes the pattern `data/*.csv` (a computed part matches anything), so a path
built at run time still selects the notebook when a file it could name changes.
"""

from __future__ import annotations

import ast
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

WILD = "*"  # a part of a path or module name computed at run time
# Cell magics whose body is Python (IPython's builtins); other cell magics (bash, html, writefile...) are
# not Python, and their body is read only for the file names it mentions.
PYTHON_CELL_MAGICS = frozenset({"capture", "time", "timeit", "prun", "debug"})
SHELL_CELL_MAGICS = frozenset({"bash", "sh", "script", "system", "!"})
_JOIN_CALLS = frozenset({"os.path.join", "path.join", "posixpath.join", "join"})
_PATH_CALLS = frozenset({"Path", "PurePath", "PosixPath", "pathlib.Path", "pathlib.PurePath", "fspath",
                         "os.fspath", "str", "os.path.abspath", "abspath", "realpath", "os.path.realpath",
                         "os.path.expanduser", "os.path.normpath"})
_IMPORT_CALLS = frozenset({"importlib.import_module", "import_module", "__import__"})
_RUN_CALLS = frozenset({"runpy.run_path", "run_path"})
_RUN_MODULE_CALLS = frozenset({"runpy.run_module", "run_module"})


@dataclass(frozen=True)
class Import:
    module: str  # dotted name as written ("" for `from . import x`)
    where: str
    names: tuple[str, ...] = ()  # `from module import names`: each may be a submodule
    level: int = 0  # leading dots of a relative import


@dataclass(frozen=True)
class PathRef:
    pattern: str  # a path as written, or with WILD where a part is computed at run time
    where: str
    runs: bool = False  # executed (`%run`, runpy), not only read
    sys_path: bool = False  # added to sys.path: a folder imports are found in

    @property
    def computed(self) -> bool:
        return WILD in self.pattern


@dataclass(frozen=True)
class DynamicImport:
    prefix: str  # the dotted part known before the computed one ("" when nothing is known)
    where: str


@dataclass
class Facts:
    imports: list[Import] = field(default_factory=list)
    paths: list[PathRef] = field(default_factory=list)
    dynamic: list[DynamicImport] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "cell 3, line 2 is not valid Python (...)"

    def extend(self, other: Facts) -> None:
        self.imports += other.imports
        self.paths += other.paths
        self.dynamic += other.dynamic
        self.unreadable += other.unreadable


def analyse(source: str, where: str, *, constants: dict[str, str | None] | None = None,
            file_name: str | None = None) -> Facts:
    """The facts of one module or cell. `where` prefixes locations ("cell 3", or "" for a module file).
    `constants`: names bound to one string throughout the notebook (None: bound to several). `file_name`: a
    module's own name, for `Path(__file__).parent / "x"` (paths are resolved from the module's folder)."""
    facts = Facts()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None)
        facts.unreadable.append(f"{_at(where, line)} is not valid Python ({getattr(error, 'msg', error)})")
        return facts
    known = constants if constants is not None else string_constants([tree])
    if file_name is not None:
        known = {**known, "__file__": file_name}
    _Visitor(facts, where, known).visit(tree)
    return facts


def string_constants(trees: Iterable[ast.AST]) -> dict[str, str | None]:
    """Names assigned a static string (or path); a name assigned several different values maps to None."""
    found: dict[str, str | None] = {}
    for tree in trees:
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            for target in targets:
                if isinstance(target, ast.Name) and value is not None:
                    text = _Static({}).value(value)
                    if text is None or WILD in text:
                        found[target.id] = None
                    elif found.get(target.id, text) != text:
                        found[target.id] = None
                    else:
                        found[target.id] = text
    return found


def parse_quietly(source: str) -> ast.AST | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _at(where: str, line: int | None) -> str:
    if not where:
        return f"line {line}" if line else "(module)"
    return f"{where}, line {line}" if line else where


def dotted(node: ast.expr) -> str:
    """`os.path.join` for the expression os.path.join; '' when it is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    if isinstance(node, ast.Call) and dotted(node.func) == "get_ipython":
        return "get_ipython()"  # magics and shell lines, as IPython's transformer writes them
    return ""


class _Static:
    """The value of an expression as far as it is written in the code: a string with WILD for computed parts,
    or None when the expression is not a string or path at all."""

    def __init__(self, constants: dict[str, str | None]) -> None:
        self.constants = constants

    def value(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else None
        if isinstance(node, ast.JoinedStr):
            return "".join(self._part(part) for part in node.values)
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return self.constants[node.id] or WILD
            return None
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
            left, right = self.value(node.left), self.value(node.right)
            if left is None and right is None:
                return None
            joiner = "/" if isinstance(node.op, ast.Div) else ""
            return (left or WILD) + joiner + (right or WILD)
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = self.value(node.value)
            return None if inner is None else _dirname(inner)
        if isinstance(node, ast.Call):
            return self._call(node)
        return None

    def _part(self, part: ast.expr) -> str:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            return part.value
        if isinstance(part, ast.FormattedValue):
            inner = self.value(part.value)
            return inner if inner is not None else WILD
        return WILD

    def _call(self, node: ast.Call) -> str | None:
        name = dotted(node.func)
        if name in _JOIN_CALLS or name in _PATH_CALLS:
            if not node.args:
                return None
            parts = [self.value(arg) for arg in node.args]
            if all(part is None for part in parts):
                return None
            return "/".join(part or WILD for part in parts)
        if name in ("os.path.dirname", "dirname"):
            inner = self.value(node.args[0]) if node.args else None
            return None if inner is None else _dirname(inner)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("joinpath", "format", "resolve", "absolute"):
            inner = self.value(node.func.value)
            if inner is None:
                return None
            if node.func.attr == "joinpath":
                return "/".join([inner, *(self.value(arg) or WILD for arg in node.args)])
            if node.func.attr == "format":
                return _format_fields(inner)
            return inner
        return None


def _dirname(path: str) -> str:
    head = path.rstrip("/").rpartition("/")[0]
    return head or "."


def _format_fields(text: str) -> str:
    out, depth = [], 0
    for char in text:
        if char == "{":
            depth += 1
            if depth == 1:
                out.append(WILD)
        elif char == "}":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(char)
    return "".join(out)


class _Visitor(ast.NodeVisitor):
    def __init__(self, facts: Facts, where: str, constants: dict[str, str | None]) -> None:
        self.facts = facts
        self.where = where
        self.static = _Static(constants)
        self.constants = constants

    def _loc(self, node: ast.AST) -> str:
        return _at(self.where, getattr(node, "lineno", None))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.facts.imports.append(Import(alias.name, self._loc(node)))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(alias.name for alias in node.names if alias.name != "*")
        self.facts.imports.append(Import(node.module or "", self._loc(node), names, node.level))

    def visit_Call(self, node: ast.Call) -> None:
        name = dotted(node.func)
        first = node.args[0] if node.args else None
        if name.startswith("get_ipython") and name.endswith(("run_line_magic", "run_cell_magic", "system",
                                                              "getoutput")):
            self._magic(name.rpartition(".")[2], node)
            return
        if first is not None and (name in _IMPORT_CALLS or name in _RUN_MODULE_CALLS):
            self._import_call(node, first)
        elif first is not None and name in _RUN_CALLS:
            self._path(first, runs=True)
        elif node.args and name in ("sys.path.append", "sys.path.insert"):
            folder = self.static.value(node.args[-1])
            if folder is not None:
                self.facts.paths.append(PathRef(folder, self._loc(node), sys_path=True))
        self._whole_or_parts(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._whole_or_parts(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        self._whole_or_parts(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._whole_or_parts(node)

    def _whole_or_parts(self, node: ast.expr) -> None:
        """A path built from parts is one reference: taken whole, its parts are not looked at again."""
        text = self.static.value(node)
        if text is None:
            self.generic_visit(node)
        else:
            self._literal(text, node)

    def _import_call(self, node: ast.Call, first: ast.expr) -> None:
        text = self.static.value(first)
        package = node.args[1] if len(node.args) > 1 else next(
            (keyword.value for keyword in node.keywords if keyword.arg == "package"), None)
        if text is not None and WILD not in text:
            level = len(text) - len(text.lstrip("."))
            if level and package is not None:
                base = self.static.value(package)
                if base is None or WILD in base:
                    self.facts.dynamic.append(DynamicImport("", self._loc(node)))
                    return
                text = ".".join([*base.split(".")[: len(base.split(".")) - level + 1], text.lstrip(".")]).strip(".")
                level = 0
            self.facts.imports.append(Import(text.lstrip("."), self._loc(node), (), level))
            return
        known = (text or "").split(WILD, 1)[0]
        prefix = known.rpartition(".")[0] if "." in known else ""
        self.facts.dynamic.append(DynamicImport(prefix, self._loc(node)))

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self._literal(node.value, node)

    # A name bound to one path (`DATA = Path("../data")`) is a reference where it is used, as what it is used
    # for: `DATA / "sales.csv"` names that file, not the whole folder; `os.listdir(DATA)` names the folder.
    def visit_Assign(self, node: ast.Assign) -> None:
        if not all(self._bound(target) for target in node.targets):
            self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None or not self._bound(node.target):
            self.generic_visit(node)

    def _bound(self, target: ast.expr) -> bool:
        return isinstance(target, ast.Name) and self.constants.get(target.id) is not None

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and self.constants.get(node.id) is not None:
            self._literal(self.constants[node.id] or "", node)

    # Dictionary keys and subscripts (`row["data"]`, `{"model": ...}`) name columns and fields, not files.
    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.visit(node.value)
        if not isinstance(node.slice, ast.Constant):
            self.visit(node.slice)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key in node.keys:
            if key is not None and not isinstance(key, ast.Constant):
                self.visit(key)
        for value in node.values:
            self.visit(value)

    def _literal(self, text: str, node: ast.AST, *, runs: bool = False) -> None:
        if text.strip() and len(text) < 400 and "\n" not in text:
            self.facts.paths.append(PathRef(text.strip(), self._loc(node), runs))

    def _path(self, node: ast.expr, *, runs: bool = False) -> None:
        text = self.static.value(node)
        if text is not None:
            self._literal(text, node, runs=runs)

    def _magic(self, kind: str, node: ast.Call) -> None:
        args = [self.static.value(arg) for arg in node.args]
        if kind in ("system", "getoutput"):
            self._shell(args[0] if args else None, node)
            return
        if kind == "run_line_magic" and len(args) >= 2 and args[0] is not None:
            self._line_magic(args[0], args[1] or WILD, node)
            return
        if kind == "run_cell_magic" and len(args) >= 3 and args[0] is not None:
            magic, line, body = args[0], args[1] or "", args[2] or ""
            if magic in PYTHON_CELL_MAGICS:
                inner = analyse(body, self.where, constants=self.constants)
                self.facts.extend(inner)
            elif magic in SHELL_CELL_MAGICS:
                self._shell(body, node)
            else:  # %%writefile out.txt, %%html...: only file names on its line count
                self._shell(line, node)

    def _line_magic(self, magic: str, line: str, node: ast.Call) -> None:
        words = _words(line)
        if magic == "run":
            if "-m" in words:
                module = words[words.index("-m") + 1] if words.index("-m") + 1 < len(words) else WILD
                self._module_or_dynamic(module, node)
                return
            target = next((word for word in words if not word.startswith("-")), None)
            if target is not None:
                self._literal(_expand(target), node, runs=True)
        elif magic in ("load_ext", "reload_ext"):
            for word in words:
                self._module_or_dynamic(word, node)
        elif magic in ("load", "loadpy", "pycat", "cat"):
            for word in words:
                if not word.startswith("-"):
                    self._literal(_expand(word), node)

    def _module_or_dynamic(self, module: str, node: ast.AST) -> None:
        module = _expand(module)
        if WILD in module:
            known = module.split(WILD, 1)[0]
            self.facts.dynamic.append(DynamicImport(known.rpartition(".")[0], self._loc(node)))
        else:
            self.facts.imports.append(Import(module, self._loc(node)))

    def _shell(self, text: str | None, node: ast.AST) -> None:
        """A shell line is not Python; the file names and `python -m` modules in it still count."""
        words = _words(text or "")
        for index, word in enumerate(words):
            if word == "-m" and index + 1 < len(words) and index and words[index - 1].startswith("python"):
                self._module_or_dynamic(words[index + 1], node)
            elif not word.startswith("-"):
                self._literal(_expand(word), node, runs=word.endswith((".py", ".ipynb")))


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: still split, less carefully
        return text.split()


def _expand(word: str) -> str:
    """IPython expands $name and {expr} in magic lines at run time: those parts are computed."""
    out, index = [], 0
    while index < len(word):
        char = word[index]
        if char == "$" and index + 1 < len(word) and (word[index + 1].isalnum() or word[index + 1] in "_{"):
            index += 1
            if word[index] == "{":
                index = word.find("}", index) + 1 or len(word)
            else:
                while index < len(word) and (word[index].isalnum() or word[index] == "_"):
                    index += 1
            out.append(WILD)
            continue
        if char == "{":
            index = word.find("}", index) + 1 or len(word)
            out.append(WILD)
            continue
        out.append(char)
        index += 1
    return "".join(out)
