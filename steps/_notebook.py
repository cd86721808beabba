"""The notebook file: read and check it, inject parameters, mark the failing cell, cap outputs, write it.

Everything here is plain data manipulation (no kernel), so it is cheap and testable on its own.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat
import nbformat.v4
import nbformat.validator
from nbformat import NotebookNode

try:
    from .ansi import strip_ansi
    from .atomic import write_text_atomic
except ImportError:  # imported by run_notebook.py run as a script
    from ansi import strip_ansi  # type: ignore[no-redef]
    from atomic import write_text_atomic  # type: ignore[no-redef]

# nbformat has no type hints; these typed names keep mypy --strict meaningful for the code below.
new_code_cell: Callable[..., NotebookNode] = nbformat.v4.new_code_cell
new_markdown_cell: Callable[..., NotebookNode] = nbformat.v4.new_markdown_cell
_convert: Callable[[NotebookNode, int], NotebookNode] = nbformat.convert
_normalize: Callable[..., tuple[int, dict[str, Any]]] = nbformat.validator.normalize
_writes_json: Callable[[NotebookNode], str] = nbformat.versions[4].writes_json

# papermill's failure markers, reproduced from papermill/execute.py (2.x) so that the output notebook looks
# like papermill's: a red banner at the top linking to an anchor cell placed just above the failing cell.
# Marker cells from an earlier papermill run are removed before running, as papermill does.
ERROR_MARKER_TAG = "papermill-error-cell-tag"
_ERROR_STYLE = 'style="color:red; font-family:Helvetica Neue, Helvetica, Arial, sans-serif; font-size:2em;"'
ERROR_MESSAGE_TEMPLATE = (
    f"<span {_ERROR_STYLE}>An Exception was encountered at '<a href=\"#papermill-error-cell\">In [%s]</a>'.</span>"
)
ERROR_ANCHOR_MSG = (
    f'<span id="papermill-error-cell" {_ERROR_STYLE}>'
    "Execution using papermill encountered an exception here and stopped:"
    "</span>"
)
PARAMETERS_TAG = "parameters"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
RAISES_TAG = "raises-exception"  # nbclient's: the cell is expected to raise, its error does not stop the run
INJECTED_TAG = "injected-parameters"

class InvalidNotebook(Exception):
    """The file cannot be run as a notebook; the message names the file and what is wrong."""


def load_notebook(path: Path, repairs: list[str] | None = None) -> NotebookNode:
    """Read `path` as a v4.5 notebook, or raise InvalidNotebook.

    v3 files and v4 files before 4.5 are upgraded (as papermill does when it reads a notebook), so that the
    cells this runner adds, which carry ids, keep the notebook schema-valid. Defects that Jupyter, papermill
    and nbmake run through are repaired, each with a note appended to `repairs`; only what cannot be run
    is refused (docs/step-runner.md, "Notebook files")."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidNotebook(f"{path}: file not found") from None
    except OSError as exc:
        raise InvalidNotebook(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise InvalidNotebook(f"{path}: the file is empty, not a notebook")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InvalidNotebook(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidNotebook(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); is the file truncated "
            "or an unresolved merge conflict?"
        ) from None
    except RecursionError:  # JSON nested ~1,000 levels deep: Python's parser gives up, and so do we, clearly
        raise InvalidNotebook(f"{path}: nested too deep to be read as a notebook") from None
    version = data.get("nbformat") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidNotebook(f"{path}: valid JSON but not a Jupyter notebook (no 'nbformat' version field)")
    if version not in (3, 4):
        raise InvalidNotebook(f"{path}: nbformat version {version} is not supported (3 and 4 are)")
    notes = repairs if repairs is not None else []
    if version == 4:
        data = _repaired_v4(data, notes)
    return _to_v4(path, data)


def _to_v4(path: Path, data: dict[str, Any]) -> NotebookNode:
    with warnings.catch_warnings():
        # nbformat warns about missing ids and the like on every read; the repairs above say what matters.
        warnings.simplefilter("ignore")
        try:
            # Checked as stored, before anything reads it: the readers fail obscurely on malformed cells.
            nbformat.validate(data)
            # The version's own reader joins multi-line sources stored as lists, as nbformat.read does.
            nb = _convert(nbformat.versions[data["nbformat"]].to_notebook_json(data), 4)
        except nbformat.ValidationError as exc:
            raise InvalidNotebook(f"{path}: not a valid Jupyter notebook: {_describe(exc)}") from None
        except Exception as exc:  # conversion of a malformed v3 file
            raise InvalidNotebook(f"{path}: cannot be read as nbformat {data.get('nbformat')}: {exc}") from None
    _set_cell_ids(nb.cells)  # a converted v3 file has none
    nb.nbformat_minor = max(_V4_MINOR, nb.get("nbformat_minor", 0))
    return nb


def _describe(exc: Exception) -> str:
    """'<what is wrong> (at cells/3/source)' from a jsonschema/nbformat ValidationError."""
    where = "/".join(str(part) for part in getattr(exc, "absolute_path", ()))
    message = getattr(exc, "message", str(exc).splitlines()[0])
    return message + (f" (at {where})" if where else "")


def _repaired_v4(data: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """`data` made a valid v4.5 notebook where only details a run does not need are wrong; what cannot be
    repaired is left for validation to refuse."""
    cells = data.get("cells")
    metadata = data.get("metadata")
    if not isinstance(cells, list) or not isinstance(metadata, dict):
        return data
    kernelspec = metadata.get("kernelspec")
    if isinstance(kernelspec, dict) and not isinstance(kernelspec.get("name"), str):
        # Jupyter opens such a notebook with its default kernel: run it as one that names no kernel. The
        # language stays, so the kernel choice still knows what language the notebook is in.
        kernelspec["name"] = ""
        kernelspec.setdefault("display_name", "")
        notes.append("repaired: metadata.kernelspec has no 'name' (the notebook is run as one that names no kernel)")
    minor = data.get("nbformat_minor")
    if isinstance(minor, int) and minor < _V4_MINOR:
        # As papermill reads every notebook (nbformat.v4.upgrade): ids are allowed from 4.5 on, and the cells
        # this runner adds carry them. An id a pre-4.5 file carried anyway is replaced.
        for cell in cells:
            if isinstance(cell, dict):
                cell.pop("id", None)
        data["nbformat_minor"] = _V4_MINOR
    elif isinstance(minor, int) and minor > _V4_MINOR:
        data["nbformat_minor"] = _V4_MINOR  # a newer minor than this nbformat knows: validated as 4.5
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            # The stored results are discarded before the run (prepare): whatever shape they have cannot
            # matter, and a tool that wrote them badly must not stop the notebook from running.
            cell["outputs"] = []
            cell["execution_count"] = None
        if isinstance(cell, dict) and "metadata" not in cell:
            cell["metadata"] = {}
    fixed = _set_cell_ids([cell for cell in cells if isinstance(cell, dict)])
    if fixed and not (isinstance(minor, int) and minor < _V4_MINOR):
        notes.append(f"repaired: {fixed} cell id{'s' if fixed > 1 else ''} missing, duplicated or not matching "
                     f"[a-zA-Z0-9-_]{{1,64}} (replaced by new ids)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nbformat.validate(data)
        except nbformat.ValidationError:
            # Metadata a run does not read (a string where nbformat wants a list, a bad `collapsed`): removed, as
            # nbformat's normalize(strip_invalid_metadata=True) does. Anything else is refused by validation.
            try:
                changes, data = _normalize(copy.deepcopy(data), strip_invalid_metadata=True)
            except Exception:  # nbformat's normalize trips over malformed cells: validation will say what
                changes = 0
            if changes:
                notes.append(f"repaired: removed metadata that does not match the notebook schema ({changes} "
                             f"entr{'ies' if changes > 1 else 'y'})")
    return data


_V4_MINOR = 5
_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


def _set_cell_ids(cells: list[Any]) -> int:
    """Gives every cell a valid, unique id (the 4.5 schema's rule); returns how many it changed."""
    seen: set[str] = set()
    changed = 0
    for cell in cells:
        cell_id = cell.get("id")
        if not (isinstance(cell_id, str) and _CELL_ID.match(cell_id)) or cell_id in seen:
            cell_id = uuid.uuid4().hex[:8]
            while cell_id in seen:
                cell_id = uuid.uuid4().hex[:8]
            cell["id"] = cell_id
            changed += 1
        seen.add(cell_id)
    return changed


@dataclass
class WorkingNotebook:
    """The notebook as run: the source cells (papermill markers of an earlier run removed) plus injected
    and marker cells. `source_index[i]` is cell i's index in the source file, None for cells added here, so
    that a failing cell is reported by its position in the file the author edits (docs/architecture.md#step-contract)."""

    nb: NotebookNode
    source_index: list[int | None]
    warnings: list[str] = field(default_factory=list)

    def source_of(self, index: int | None) -> int | None:
        return None if index is None else self.source_index[index]

    def insert(self, index: int, cell: NotebookNode) -> None:
        self.nb.cells.insert(index, cell)
        self.source_index.insert(index, None)


def prepare(nb: NotebookNode) -> WorkingNotebook:
    """The notebook to run: papermill markers of an earlier run removed, old results cleared."""
    keep = [(i, cell) for i, cell in enumerate(nb.cells) if ERROR_MARKER_TAG not in tags(cell)]
    nb.cells = [cell for _, cell in keep]
    for cell in nb.cells:
        # Outputs committed with the source must not survive: a stale glued metric would count as this
        # run's, and cells never reached would show results they did not produce.
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata["papermill"] = _pending()
    nb.metadata["papermill"] = {"parameters": {}, "exception": None}
    # Widget state saved with the source describes views whose outputs were just cleared; the executed
    # notebook gets the state this run's kernel produces (as nbclient stores it), or none.
    widgets = nb.metadata.get("widgets")
    if isinstance(widgets, dict):
        widgets.pop(WIDGET_STATE_MIME, None)
        if not widgets:
            del nb.metadata["widgets"]
    return WorkingNotebook(nb, [i for i, _ in keep])


def inject_parameters(work: WorkingNotebook, parameters: Mapping[str, Any], kernel_name: str, language: str) -> None:
    """A cell tagged `injected-parameters` after the `parameters` cell, as papermill writes it (its translators
    render the values, so strings, numbers, None and nested containers come out exactly). InvalidNotebook
    when papermill has no translator for the language; the notebook is then left unchanged."""
    if not parameters:
        return
    # Imported here: papermill's import costs ~0.3 s and a notebook without parameters never needs it.
    from papermill.translators import papermill_translators

    nb = work.nb
    injected = _first_tagged(nb, INJECTED_TAG)
    tagged = _first_tagged(nb, PARAMETERS_TAG)
    try:
        translator = papermill_translators.find_translator(kernel_name, language)
        source = translator.codify(dict(parameters), "Parameters")
    except Exception as exc:  # papermill has no translator for this kernel/language
        raise InvalidNotebook(f"cannot inject parameters for kernel {kernel_name!r} ({language}): {exc}") from None
    cell = new_code_cell(source=source, metadata={"tags": [INJECTED_TAG], "papermill": _pending()})
    nb.metadata["papermill"]["parameters"] = dict(parameters)
    if injected >= 0:  # a notebook saved from an earlier papermill run: replace its injected cell
        nb.cells[injected] = cell
        work.source_index[injected] = None
    elif tagged >= 0:
        work.insert(tagged + 1, cell)
    else:
        work.insert(0, cell)
        work.warnings.append(
            f"the notebook has no cell tagged '{PARAMETERS_TAG}': parameters were injected at the top"
        )
    declared = _declared(translator, nb.cells[tagged]) if tagged >= 0 else None  # injecting kept its index
    if declared is not None:
        for name in parameters:
            if name not in declared:
                work.warnings.append(f"parameter {name!r} is not declared in the notebook's parameters cell")


def _declared(translator: Any, cell: NotebookNode) -> set[str] | None:
    """Names the parameters cell assigns (papermill's `inspect`, as in `papermill --help-notebook`), or None
    where papermill cannot inspect this language. Called directly rather than through
    papermill.inspection._infer_parameters, which needs a `tags` list on every cell."""
    try:
        return {parameter.name for parameter in translator.inspect(cell)}
    except Exception:  # NotImplementedError for most languages
        return None


def _pending() -> dict[str, Any]:
    return {"exception": None, "start_time": None, "end_time": None, "duration": None, "status": "pending"}


def tags(cell: Mapping[str, Any]) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _first_tagged(nb: NotebookNode, tag: str) -> int:
    return next((i for i, cell in enumerate(nb.cells) if tag in tags(cell)), -1)


def error_output(cell: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The cell's first error output that counts as a failure: papermill's rule, where SystemExit() and
    SystemExit(0) end a notebook successfully."""
    for output in cell.get("outputs") or ():
        if output.get("output_type") == "error" and not (
            output.get("ename") == "SystemExit" and str(output.get("evalue", "")) in ("", "0")
        ):
            return output  # type: ignore[no-any-return]
    return None


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def mark_failure(work: WorkingNotebook, index: int) -> None:
    """Papermill's banner (top) and anchor (just above cell `index`)."""
    count = work.nb.cells[index].get("execution_count")
    anchor = new_markdown_cell(ERROR_ANCHOR_MSG, metadata={"tags": [ERROR_MARKER_TAG]})
    banner = new_markdown_cell(ERROR_MESSAGE_TEMPLATE % count, metadata={"tags": [ERROR_MARKER_TAG]})
    work.insert(index, anchor)
    work.insert(0, banner)


def output_tail(cells: Iterable[Mapping[str, Any]], max_lines: int = 40, max_chars: int = 4000) -> str:
    """The end of what the notebook printed (streams and plain-text results), for JUnit system-out."""
    pieces: list[str] = []
    for cell in cells:
        for output in cell.get("outputs") or ():
            kind = output.get("output_type")
            if kind == "stream":
                pieces.append(_text(output.get("text", "")))
            elif kind in ("execute_result", "display_data") and "text/plain" in output.get("data", {}):
                pieces.append(_text(output["data"]["text/plain"]).rstrip("\n") + "\n")
    # A progress bar rewrites its line with carriage returns: keep only what the terminal would show.
    lines = [line.rsplit("\r", 1)[-1] for line in "".join(pieces).split("\n")]
    tail = "\n".join(lines[-max_lines - 1 :]).strip("\n")
    return strip_ansi(tail[-max_chars:])


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def cell_started(cell: NotebookNode) -> None:
    cell.metadata.setdefault("papermill", _pending()).update(
        start_time=_papermill_time(), status="running", exception=False
    )


def cell_finished(cell: NotebookNode, *, failed: bool) -> None:
    meta = cell.metadata.setdefault("papermill", _pending())
    end = datetime.now(timezone.utc)
    meta["end_time"] = end.replace(tzinfo=None).isoformat()
    if meta.get("start_time"):
        start = datetime.fromisoformat(meta["start_time"]).replace(tzinfo=timezone.utc)
        meta["duration"] = (end - start).total_seconds()
    meta["status"] = "failed" if failed else "completed"
    meta["exception"] = failed


def _papermill_time() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()  # papermill's format (naive UTC)


def write_notebook(nb: NotebookNode, path: Path) -> str | None:
    """Writes the notebook; returns what makes it schema-invalid, if anything (nbformat.writes would log
    that as an 8-line "Notebook JSON is invalid" block instead)."""
    problem = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            nbformat.validate(nb)
        except nbformat.ValidationError as exc:
            problem = _describe(exc)
    write_text_atomic(path, _writes_json(nb))
    return problem
