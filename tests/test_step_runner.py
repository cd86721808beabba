"""The step runner (steps/run_notebook.py) as a library, with real kernels: one behaviour per test, each on a
tiny notebook generated in tmp_path (docs/architecture.md#tiny-named-test-data)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import nbformat
import pytest

from steps import run_notebook
from steps._exits import death_hint
from steps._metrics import InvalidRule, check_expectations, parse_expectations, parse_rule, read_metrics
from steps._notebook import ERROR_MARKER_TAG, output_tail
from steps._outputs import CappedClient
from steps._logs import LOG_LIMIT_BYTES, LogCap, log_tail
from steps.run_notebook import StepRequest, run_step, skipped_result
from steps.step_result import StepResult
from tests.builders import glue_source, left_running, make_notebook


def run(notebook: Path, out: Path, **fields: Any) -> dict[str, Any]:
    """The result as result.json holds it: the step contract these tests check."""
    return asyncio.run(run_step(StepRequest(notebook_path=notebook, output_dir=out, **fields))).to_json()


def read_result(out: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((out / "result.json").read_text(encoding="utf-8")))


def executed(out: Path, name: str = "nb.ipynb") -> nbformat.NotebookNode:
    """The output notebook, checked against the nbformat schema."""
    nb = nbformat.reads((out / name).read_text(encoding="utf-8"), as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(nb)
    return cast(nbformat.NotebookNode, nb)


# ----------------------------------------------------------------------------------------------- outcomes


def test_passed_writes_result_notebook_and_kernel_log(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "print('hello')", glue_source("accuracy", 0.93))
    out = tmp_path / "out"
    result = run(nb, out, notebook_rel="sub/nb.ipynb", target="cpu", environment="cpu", attempt=2)

    assert result["status"] == "passed"
    assert result == read_result(out)
    assert result["schema"] == 1 and result["step"] == "sub_nb" and result["notebook"] == "sub/nb.ipynb"
    assert result["error"] is None and result["attempts"] == 2 and result["kernel"] == "python3"
    assert result["started_at"].endswith("Z") and result["finished_at"].endswith("Z") and result["duration_s"] > 0
    assert result["metrics"] == {"accuracy": 0.93}
    assert result["output_notebook"] == "nb.ipynb" and result["warnings"] == []
    assert "hello" in result["output_tail"]
    assert (out / "kernel.log").exists()
    assert executed(out).cells[0].outputs[0]["text"] == "hello\n"


def test_cell_error_is_failed_with_source_index_and_papermill_markers(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1", "raise ValueError('bad value')", "print('never')",
                       parameters="x = 0")
    out = tmp_path / "out"
    result = run(nb, out, parameters={"x": 2})

    assert result["status"] == "failed"
    error = result["error"]
    assert error["kind"] == "cell_error"
    assert error["cell_index"] == 2  # parameters cell, x = 1, raise: the injected cell is not counted
    assert error["ename"] == "ValueError" and error["evalue"] == "bad value"
    assert "ValueError" in error["traceback"] and "\x1b[" not in error["traceback"]
    cells = executed(out).cells
    assert ERROR_MARKER_TAG in cells[0].metadata["tags"] and "In [4]" in cells[0].source
    failing = next(i for i, c in enumerate(cells) if "raise ValueError" in c.source)
    assert ERROR_MARKER_TAG in cells[failing - 1].metadata["tags"]
    assert cells[failing - 1].source.startswith('<span id="papermill-error-cell"')
    assert cells[-1].outputs == []  # never reached


def test_an_error_raised_after_the_cell_code_fails_the_cell(tmp_path: Path) -> None:
    # The kernel's execute_reply says "ok" when a post_run_cell callback raises (as when matplotlib's inline
    # backend fails to render a figure): the error exists only as an output. A cell tagged raises-exception
    # may still hold an error (nbclient's rule).
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1",
                       "def render(result):\n    raise ValueError('figure failed to render')\n"
                       "get_ipython().events.register('post_run_cell', render)",
                       "print('never')")
    notebook = nbformat.read(nb, as_version=4)  # type: ignore[no-untyped-call]
    notebook.cells[0].source = "raise KeyError('expected')"
    notebook.cells[0].metadata["tags"] = ["raises-exception"]
    nbformat.write(notebook, nb)  # type: ignore[no-untyped-call]
    out = tmp_path / "out"
    result = run(nb, out)
    assert result["status"] == "failed"
    error = result["error"]
    assert error["kind"] == "cell_error" and error["cell_index"] == 1
    assert error["ename"] == "ValueError" and error["evalue"] == "figure failed to render"
    assert "render" in error["traceback"]
    assert any("the kernel reported success, the cell failed" in warning for warning in result["warnings"])
    cells = executed(out).cells
    assert ERROR_MARKER_TAG in cells[0].metadata["tags"]
    assert cells[-1].outputs == []  # never reached


def test_sys_exit_zero_ends_the_notebook_successfully(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "import sys\nsys.exit(0)", "raise RuntimeError('not reached')")
    result = run(nb, tmp_path / "out")
    assert result["status"] == "passed"
    assert any("SystemExit" in warning for warning in result["warnings"])


def test_whole_notebook_timeout_kills_the_kernel_process_tree(tmp_path: Path) -> None:
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        "import os, subprocess\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "own_session = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
        "print(os.getpid(), child.pid, own_session.pid, flush=True)",
        "import time\ntime.sleep(60)",
    )
    out = tmp_path / "out"
    result = run(nb, out, timeout_s=2.5)

    assert result["status"] == "timed_out"
    assert result["error"]["kind"] == "timeout" and result["error"]["cell_index"] == 1
    assert "2.5 s" in result["error"]["evalue"]
    executed(out)  # the partial notebook is kept, and valid
    assert left_running(str(tmp_path)) == []  # the kernel and both children ran in tmp_path
    assert result["duration_s"] < 10


def test_the_notebook_clock_starts_when_the_kernel_is_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel that takes 2 s to start (a loaded machine, a big environment) must not eat a 1.5 s notebook
    # limit: the start has its own limit (start_timeout_s).
    slow = tmp_path / "jupyter" / "kernels" / "slow"
    slow.mkdir(parents=True)
    (slow / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", "import time; time.sleep(2); "
                 "from ipykernel.kernelapp import launch_new_instance; launch_new_instance()",
                 "-f", "{connection_file}"],
        "display_name": "Slow", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1", kernel="slow")
    result = run(nb, tmp_path / "out", timeout_s=1.5)
    assert result["status"] == "passed", result["error"]
    assert result["duration_s"] > 2


def test_cell_timeout(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1", "import time\ntime.sleep(30)")
    result = run(nb, tmp_path / "out", cell_timeout_s=1.5, timeout_s=60)
    assert result["status"] == "timed_out"
    assert result["error"]["kind"] == "timeout" and result["error"]["cell_index"] == 1
    assert "cell timeout" in result["error"]["evalue"]


@pytest.mark.parametrize(
    ("source", "explained"),
    [
        ("import os\nos._exit(1)", "exit code 1: os._exit()"),
        ("import ctypes\nctypes.string_at(0)", "killed by SIGSEGV: a crash in native code"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", "killed by SIGTERM: something outside"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL: usually the out-of-memory"),
    ],
    ids=["os_exit", "segfault", "sigterm", "sigkill"],
)
def test_kernel_death_is_crashed_and_explained(tmp_path: Path, source: str, explained: str) -> None:
    # The kernel's own status, even when it runs under an init in its own PID namespace (steps/_isolation.py),
    # where the process jupyter_client started is the namespace's wrapper, not the kernel.
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1", source, "print('never')")
    out = tmp_path / "out"
    result = run(nb, out)
    assert result["status"] == "crashed"
    assert result["error"]["kind"] == "kernel_died" and result["error"]["cell_index"] == 1
    assert "the kernel died while cell 1 was running" in result["error"]["evalue"]
    assert explained in result["error"]["evalue"]
    executed(out)


@pytest.mark.parametrize(
    ("returncode", "explained"),
    [
        (-9, "killed by SIGKILL: usually the out-of-memory killer"),
        (-15, "killed by SIGTERM: something outside the notebook asked it to stop"),
        (-6, "killed by SIGABRT: native code gave up"),
        (137, "exit code 137, i.e. its child was killed by SIGKILL: usually the out-of-memory killer"),
        (-10, "killed by SIGUSR1: sent by another process"),
        (3, "the process ended with exit code 3: os._exit()"),
        (None, "its process stopped answering"),
    ],
)
def test_a_kernel_death_names_the_signal_and_its_usual_cause(returncode: int | None, explained: str) -> None:
    assert death_hint(returncode).startswith(explained)


# ------------------------------------------------------------------------------------------ cannot start


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"cells": [', "not valid JSON"),
        ('{"hello": "world"}', "not a Jupyter notebook"),
        ("", "empty"),
        ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"x": 1}]}', "not a valid Jupyter notebook"),
        (None, "not found"),
    ],
    ids=["corrupt_json", "json_not_notebook", "empty", "schema_invalid", "missing"],
)
def test_invalid_notebook_is_error(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "nb.ipynb"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = run(path, out)
    assert result["status"] == "error"
    assert result["error"]["kind"] == "invalid_notebook"
    assert str(path) in result["error"]["evalue"] and expected in result["error"]["evalue"]
    assert read_result(out)["status"] == "error"
    assert not (out / "kernel.log").exists()  # no kernel was started


def test_plan_required_kernel_not_installed_is_no_kernel(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    out = tmp_path / "out"
    result = run(nb, out, kernel="no-such-kernel", kernel_required=True)
    assert result["status"] == "error"
    assert result["error"]["kind"] == "no_kernel" and "no-such-kernel" in result["error"]["evalue"]
    assert result["kernel"] == "no-such-kernel"
    executed(out)  # the (unexecuted) notebook is still left behind


@pytest.mark.parametrize("kernel", [None, "kernel-from-elsewhere"], ids=["no_kernelspec", "unknown_kernel"])
def test_missing_or_unknown_notebook_kernel_runs_on_the_default_with_a_warning(
    tmp_path: Path, kernel: str | None
) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "print(1)", kernel=kernel)
    out = tmp_path / "out"
    result = run(nb, out, kernel="python3")
    assert result["status"] == "passed" and result["kernel"] == "python3"
    assert len(result["warnings"]) == 1 and "python3" in result["warnings"][0]
    assert executed(out).metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize(
    ("metadata", "named", "language"),
    [
        ({"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}}, "'ir'", "R"),
        ({"language_info": {"name": "julia", "version": "1.10.0"}}, "names no kernel", "julia"),
    ],
    ids=["r_kernel_missing", "julia_without_kernelspec"],
)
def test_a_notebook_in_another_language_never_runs_on_the_fallback_kernel(
    tmp_path: Path, metadata: dict[str, Any], named: str, language: str
) -> None:
    # print("hello") is valid R and Julia and Python alike: run by Python it would pass.
    nb = make_notebook(tmp_path / "nb.ipynb", 'print("hello")', kernel=None, metadata=metadata)
    out = tmp_path / "out"
    result = run(nb, out, kernel="python3")
    assert result["status"] == "error" and result["error"]["kind"] == "no_kernel"
    evalue = result["error"]["evalue"]
    assert named in evalue and f"written in {language}" in evalue and "'python3' runs python" in evalue
    assert "installed: python3" in evalue
    assert not (out / "kernel.log").exists()


def test_kernel_name_python_is_python3_without_a_warning(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "print(1)", kernel="python")
    out = tmp_path / "out"
    result = run(nb, out, kernel="some-other-default")
    assert result["status"] == "passed" and result["warnings"] == [] and result["kernel"] == "python3"
    assert executed(out).metadata["kernelspec"]["name"] == "python3"


def test_kernel_that_cannot_start_is_infrastructure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_dir = tmp_path / "jupyter" / "kernels" / "broken"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)",
                 "{connection_file}"],
        "display_name": "Broken", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1", kernel="broken")
    out = tmp_path / "out"
    result = run(nb, out, kernel="broken", kernel_required=True, start_timeout_s=10)
    assert result["status"] == "error"
    assert result["error"]["kind"] == "infrastructure"
    assert "broken" in result["error"]["evalue"] and "exit code 3" in result["error"]["evalue"]
    assert "boom" in (out / "kernel.log").read_text() and "boom" in result["error"]["traceback"]


def test_nbformat_v3_notebook_is_upgraded_and_run(tmp_path: Path) -> None:
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({
        "nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
        "worksheets": [{"metadata": {}, "cells": [
            {"cell_type": "code", "input": "print('from v3')", "language": "python", "metadata": {},
             "outputs": [], "collapsed": False, "prompt_number": None},
        ]}],
    }))
    out = tmp_path / "out"
    result = run(path, out)
    assert result["status"] == "passed"
    nb = executed(out)
    assert nb.nbformat == 4 and nb.cells[0].outputs[0]["text"] == "from v3\n"


def _v4_file(path: Path, minor: int, *sources: str, kernelspec: dict[str, Any], cell_ids: list[str] | None = None,
             parameters: str | None = None) -> Path:
    """A notebook file written as older or sloppier tools write them (nbformat's writer would refuse)."""
    cells: list[dict[str, Any]] = []
    if parameters is not None:
        cells.append({"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": parameters,
                      "outputs": [], "execution_count": None})
    cells += [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}
              for source in sources]
    for cell, cell_id in zip(cells, cell_ids or []):
        cell["id"] = cell_id
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": minor, "metadata": {"kernelspec": kernelspec},
                                "cells": cells}))
    return path


def test_an_old_notebook_that_fails_with_parameters_is_written_schema_valid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Marker cells and the injected cell carry ids, which nbformat < 4.5 does not allow: the notebook is
    # upgraded as papermill upgrades it, and nothing logs "Notebook JSON is invalid".
    nb = _v4_file(tmp_path / "nb.ipynb", 4, "raise ValueError('bad')", parameters="x = 0",
                  kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"})
    out = tmp_path / "out"
    result = run(nb, out, parameters={"x": 1})
    assert result["status"] == "failed" and result["warnings"] == []
    written = executed(out)  # validates
    assert written.nbformat_minor == 5 and ERROR_MARKER_TAG in written.cells[0].metadata["tags"]
    assert len({cell.id for cell in written.cells}) == len(written.cells)
    assert not [record for record in caplog.records if "invalid" in record.getMessage().lower()]


def test_slightly_invalid_notebooks_are_repaired_with_a_warning_and_run(tmp_path: Path) -> None:
    # What Jupyter, papermill and nbmake run through: a kernelspec without a name, cell ids with characters
    # the schema does not allow, or twice the same id.
    nb = _v4_file(tmp_path / "nb.ipynb", 5, "x = 1", "print(x + 1)", "print('done')",
                  kernelspec={"display_name": "Python 3", "language": "python"},
                  cell_ids=["cell one!", "a" * 65, "dup"])
    data = json.loads(nb.read_text())
    data["cells"].append({**data["cells"][-1], "source": "print('dup')"})
    data["cells"][0]["outputs"] = [{"output_type": "stream", "text": "no name"}]  # stale, malformed
    nb.write_text(json.dumps(data))
    out = tmp_path / "out"
    result = run(nb, out)
    assert result["status"] == "passed", result["error"]
    repairs = [warning for warning in result["warnings"] if warning.startswith("repaired:")]
    assert len(repairs) == 2, result["warnings"]
    assert "kernelspec has no 'name'" in repairs[0] and "3 cell ids" in repairs[1]
    assert "2" in result["output_tail"] and "dup" in result["output_tail"]
    assert executed(out).metadata["kernelspec"]["name"] == "python3"


def test_a_step_after_a_failed_one_is_skipped_without_a_kernel(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    out = tmp_path / "out"
    failed = StepResult.from_json({"step": "prepare", "notebook": "prepare.ipynb", "status": "failed"})
    result = run(nb, out, after_results=[StepResult.from_json({"step": "a", "status": "passed"}), failed])
    assert result["status"] == "skipped"
    assert "prepare.ipynb" in result["reason"] and "failed" in result["reason"]
    assert read_result(out) == result
    assert not (out / "kernel.log").exists()


def test_skipped_result_is_written(tmp_path: Path) -> None:
    request = StepRequest(notebook_path=tmp_path / "nb.ipynb", output_dir=tmp_path / "out", step="s1")
    result = skipped_result(request, "work in progress").to_json()
    assert result["status"] == "skipped" and result["reason"] == "work in progress" and result["step"] == "s1"
    assert read_result(tmp_path / "out") == result


# --------------------------------------------------------------------------------------------- parameters


def test_parameters_are_injected_after_the_parameters_cell_exactly(tmp_path: Path) -> None:
    tricky = "it's \"quoted\" \\ back\\slash\nnew line, ünïcødé ✓ 🎉"
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        "import json\nfrom pathlib import Path\nPath('seen.json').write_text(json.dumps([text, count, ratio, flags]))",
        parameters="text = 'default'\ncount = 0\nratio = 0.0\nflags = None",
    )
    out = tmp_path / "out"
    parameters = {"text": tricky, "count": 3, "ratio": 0.25, "flags": {"a": [1, None, True]}}
    result = run(nb, out, parameters=parameters)
    assert result["status"] == "passed" and result["warnings"] == []
    assert json.loads((tmp_path / "seen.json").read_text()) == [tricky, 3, 0.25, {"a": [1, None, True]}]
    cells = executed(out).cells
    assert cells[0].metadata["tags"] == ["parameters"] and cells[1].metadata["tags"] == ["injected-parameters"]
    assert result["parameters"] == parameters


def test_undeclared_parameter_is_a_warning(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "print(epochs, extra)", parameters="epochs = 1")
    result = run(nb, tmp_path / "out", parameters={"epochs": 2, "extra": "x"})
    assert result["status"] == "passed"
    assert result["warnings"] == ["parameter 'extra' is not declared in the notebook's parameters cell"]


def test_parameters_without_a_parameters_cell_go_first_with_a_warning(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "print(epochs)", "raise KeyError('k')")
    out = tmp_path / "out"
    result = run(nb, out, parameters={"epochs": 2})
    assert result["status"] == "failed" and result["error"]["cell_index"] == 1
    assert any("no cell tagged 'parameters'" in warning for warning in result["warnings"])
    assert executed(out).cells[1].metadata["tags"] == ["injected-parameters"]  # after the error banner


# --------------------------------------------------------------------------------- metrics and expectations


def test_metrics_from_scrapbook_and_recommenders_outputs(tmp_path: Path) -> None:
    text_glue = (
        "from IPython.display import display\n"
        "display({'application/scrapbook.scrap.text+json': {'name': 'model', 'data': 'sar', 'encoder': 'text',"
        " 'version': 1}}, raw=True)"
    )
    store_metadata = (
        "from IPython.display import display\n"
        "display({'application/notebook_utils.json+json': {'name': 'map', 'data': 0.11, 'encoder': 'json'}},"
        " metadata={'notebook_utils': {'name': 'map', 'data': True, 'display': False}}, raw=True)"
    )
    nb = make_notebook(tmp_path / "nb.ipynb", glue_source("accuracy", 0.5), glue_source("accuracy", 0.93),
                       glue_source("rows", [1, 2]), text_glue, store_metadata)
    result = run(nb, tmp_path / "out", expect={"accuracy": ">= 0.9", "map": "0.1..0.2"})
    assert result["status"] == "passed"
    assert result["metrics"] == {"accuracy": 0.93, "model": "sar", "map": 0.11}  # last wins; lists are no metric
    assert [e["ok"] for e in result["expectations"]] == [True, True]


def test_missed_expectation_is_failed(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", glue_source("accuracy", 0.85))
    result = run(nb, tmp_path / "out", expect={"accuracy": ">= 0.9", "loss": "< 1"})
    assert result["status"] == "failed"
    assert result["error"]["kind"] == "expectation" and result["error"]["cell_index"] is None
    assert "accuracy = 0.85" in result["error"]["evalue"] and "loss was not recorded" in result["error"]["evalue"]
    assert result["expectations"] == [
        {"metric": "accuracy", "rule": ">= 0.9", "actual": 0.85, "ok": False},
        {"metric": "loss", "rule": "< 1", "actual": None, "ok": False},
    ]


def test_invalid_rule_is_an_error_naming_the_rule_before_any_kernel(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    out = tmp_path / "out"
    result = run(nb, out, expect={"accuracy": "at least 0.9"})
    assert result["status"] == "error" and result["error"]["kind"] == "expectation"
    assert "'at least 0.9'" in result["error"]["evalue"] and "accuracy" in result["error"]["evalue"]
    assert not (out / "kernel.log").exists()


@pytest.mark.parametrize(
    ("rule", "actual", "ok"),
    [
        (">= 0.9", 0.9, True), (">= 0.9", 0.89, False), ("> 0.9", 0.9, False), ("<= 5", 5, True),
        ("< 5", 5, False), ("== 3", 3, True), ("== 3", 3.1, False), ("!= 0", 0, False), ("!= 0", 1, True),
        ("0.8..1.0", 0.8, True), ("0.8..1.0", 1.0, True), ("0.8..1.0", 1.01, False), ("-1..1", -0.5, True),
        ("~= 0.5 +- 0.01", 0.509, True), ("~= 0.5 +- 0.01", 0.52, False), ("~=0.5±0.01", 0.495, True),
        (">= 1e-3", 0.01, True), (">= 0.9", "n/a", False), (">= 0.9", None, False),
        # Only numbers: True and the text "0.95" would pass or fail by accident.
        (">= 0.9", "0.95", False), (">= 0.9", True, False),
        (">= 0.9", float("nan"), False),
    ],
)
def test_rules(rule: str, actual: Any, ok: bool) -> None:
    assert parse_rule(rule).check(actual) is ok


@pytest.mark.parametrize("rule", ["0.9", ">= ", "=> 0.9", "1..0", "~= 0.5", "~= 0.5 +- -1", "between 1 and 2"])
def test_invalid_rules(rule: str) -> None:
    with pytest.raises(InvalidRule, match="expected"):
        parse_expectations({"m": rule})


def test_check_expectations_reports_missing_metric() -> None:
    rules = parse_expectations({"a": ">= 1", "b": "< 1"})
    assert [e.to_json() for e in check_expectations(rules, {"a": 2})] == [
        {"metric": "a", "rule": ">= 1", "actual": 2, "ok": True},
        {"metric": "b", "rule": "< 1", "actual": None, "ok": False},
    ]


def test_read_metrics_ignores_other_outputs() -> None:
    cells = [{"outputs": [
        {"output_type": "stream", "name": "stdout", "text": "x"},
        {"output_type": "display_data", "data": {"application/scrapbook.scrap.json+json": {"name": "n", "data": 1}}},
        {"output_type": "display_data", "data": {"application/scrapbook.scrap.json+json": {"name": "d", "data": {}}}},
        {"output_type": "display_data", "data": {"application/notebook_utils.json+json": '{"name": "s", "data": 2}'}},
    ]}]
    assert read_metrics(cells) == {"n": 1, "s": 2}


# ------------------------------------------------------------------------------------------------ outputs


def test_output_over_the_cap_is_truncated_with_a_note(tmp_path: Path) -> None:
    picture = base64.b64encode(os.urandom(30_000)).decode()
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        "print('x' * 50_000)\n"
        "from IPython.display import display\n"
        f"display({{'image/png': '{picture}'}}, raw=True)",
        "print('small')",
    )
    out = tmp_path / "out"
    result = run(nb, out, output_limit_bytes=10_000)
    assert result["status"] == "passed"
    cells = executed(out).cells
    big = cells[0].outputs
    assert big[0]["text"].startswith("xxx") and len(big[0]["text"]) < 10_000
    assert not any(o["output_type"] == "display_data" for o in big)
    note = big[-2]["text"]
    assert "output truncated" in note and "1 display_data (image/png)" in note and "10.0 KB" in note
    assert big[-1]["text"].endswith("xxx\n")  # the end of the stream text is kept after the note
    assert len(json.dumps(big)) < 12_000
    assert cells[1].outputs[0]["text"] == "small\n"
    assert any("cell 0" in warning and "truncated" in warning for warning in result["warnings"])


def test_the_kernel_log_tail_is_bounded_whatever_the_kernel_wrote(tmp_path: Path) -> None:
    log = tmp_path / "kernel.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)) + "x" * 5_000_000 + "\n" + "last words\n")
    tail = log_tail(log)
    lines = tail.splitlines()
    assert len(tail) < 20_000 and lines[-1] == "last words"
    assert lines[-2].startswith("[...] xxx") and "characters ...]" in lines[-2] and len(lines[-2]) <= 500
    log.write_text("y" * 3_000_000)  # one long line and nothing else
    assert 0 < len(log_tail(log)) <= 500


def test_a_long_log_is_capped_while_it_arrives_keeping_its_start_and_end(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb",
                       "for i in range(50_000):\n    print(f'line {i:07d} ' + 'y' * 40)",  # 2.7 MB, 135 times the cap
                       "from IPython.display import display\nfor i in range(3000):\n    display(i)",
                       # clear_output empties the cell and its budget (nbclient's "Clear Output" notebook)
                       "from IPython.display import clear_output\nprint('w' * 30_000)\nclear_output()\n"
                       "print('v' * 30_000)\nclear_output(wait=True)\nprint('after the clears')")
    out = tmp_path / "out"
    result = run(nb, out, output_limit_bytes=20_000)
    assert result["status"] == "passed"
    log, displays, cleared = executed(out).cells
    assert [output["text"] for output in cleared.outputs] == ["after the clears\n"]
    assert log.outputs[0]["text"].startswith("line 0000000 ")
    note = next(output["text"] for output in log.outputs if "output truncated" in output.get("text", ""))
    assert "produced 2.7 MB" in note and "removed 2.7 MB of stream text" in note
    assert re.search(r"the last 4\.\d KB of its stream text follow", note)
    assert log.outputs[-1]["text"].startswith("line 004") and log.outputs[-1]["text"].endswith("line 0049999 " + "y" * 40 + "\n")
    assert len(json.dumps(log.outputs)) < 21_000
    # 3000 outputs over the cap make one line of summary, not one entry each.
    note = displays.outputs[-1]["text"]
    assert "display_data (text/plain)" in note and len(note) < 400 and note.count("display_data") == 1
    assert len(json.dumps(displays.outputs)) < 21_000
    assert [w.split(":")[0] for w in result["warnings"]] == ["cell 0", "cell 1"]


def test_the_widget_state_the_kernel_produced_is_stored(tmp_path: Path) -> None:
    # What ipywidgets does, through the `comm` package ipykernel ships: open a jupyter.widget comm with the
    # model's state, update it, display a view of it.
    state = {"_model_name": "IntSliderModel", "_model_module": "@jupyter-widgets/controls",
             "_model_module_version": "2.0.0", "value": 3}
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        "from comm import create_comm\nfrom IPython.display import display\n"
        f"slider = create_comm(target_name='jupyter.widget', data={{'state': {state!r}, 'buffer_paths': []}})\n"
        "slider.send({'method': 'update', 'state': {'value': 7}, 'buffer_paths': []})\n"
        "display({'application/vnd.jupyter.widget-view+json': {'model_id': slider.comm_id, 'version_major': 2,"
        " 'version_minor': 0}}, raw=True)\nprint(slider.comm_id)",
        metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {
            "state": {"stale-model": {"model_name": "IntSliderModel", "state": {}}},
            "version_major": 2, "version_minor": 0}}},
    )
    out = tmp_path / "out"
    result = run(nb, out)
    assert result["status"] == "passed", result["error"]
    notebook = executed(out)
    comm_id = notebook.cells[0].outputs[-1]["text"].strip()
    stored = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert list(stored) == [comm_id]  # the source's stale state is gone
    assert stored[comm_id]["model_name"] == "IntSliderModel" and stored[comm_id]["state"]["value"] == 7


def test_outputs_over_the_cap_are_never_stored_while_they_arrive() -> None:
    # 10 MB of stream messages and 2,000 displays into one cell: what is held stays under the limit at every
    # message, not only once the cell is done.
    client = CappedClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")]), output_limit=10_000)
    outs: list[Any] = []

    def message(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"msg_type": msg_type, "header": {"msg_type": msg_type}, "parent_header": {"msg_id": "m"},
                "content": content, "metadata": {}}

    for i in range(10_000):
        client.output(outs, message("stream", {"name": "stdout", "text": f"{i:06d}" + "z" * 1000 + "\n"}), None, 0)
        assert len(json.dumps(outs)) <= 10_000
    for i in range(2_000):
        client.output(outs, message("display_data", {"data": {"text/plain": str(i)}, "metadata": {}}), None, 0)
    client.output(outs, message("error", {"ename": "E", "evalue": "kept", "traceback": []}), None, 0)
    client.nb.cells[0].outputs = outs
    [(index, note)] = client.close_cells()
    assert index == 0 and "removed 10.1 MB of stream text and 2,000 outputs" in note
    assert outs[-1]["text"].startswith("0") and outs[-1]["text"].endswith("009999" + "z" * 1000 + "\n")
    assert any(output["output_type"] == "error" for output in outs)
    assert len(json.dumps(outs)) <= 10_000


def test_the_kernel_log_is_cut_back_under_the_kernel_while_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "kernel.log"
    cap = LogCap(path, limit=100_000, head=10_000)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # as the kernel holds it
    try:
        for round_ in range(3):
            os.write(fd, b"".join(b"round %d line %06d\n" % (round_, i) for i in range(20_000)))  # 400 KB
            cap.check()
            assert path.stat().st_size < 100_000
        os.write(fd, b"the last words\n")  # lands at the new end, not where the file ended before
    finally:
        os.close(fd)
    text = path.read_text()
    assert text.startswith("round 0 line 000000\n") and text.endswith("bytes removed here; what follows is the "
                                                                       "end of the log\nthe last words\n")
    assert "\0" not in text and text.count("[orchestrator]") == 1
    assert f"{cap.removed:,} bytes removed" in text and cap.removed == 3 * 400_000 - 10_000


def test_a_kernel_writing_to_its_own_stdout_leaves_a_bounded_kernel_log(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb",
                       "import os\nfor i in range(100_000):\n    os.write(1, b'%06d ' % i + b'k' * 93 + b'\\n')\n"
                       "os.write(2, b'final line of the kernel\\n')")
    out = tmp_path / "out"
    result = run(nb, out)
    assert result["status"] == "passed"
    log = (out / "kernel.log").read_text()
    assert len(log) <= LOG_LIMIT_BYTES + 200  # 10 MB were written
    assert log.startswith("--- ") and "starting kernel 'python3'" in log.splitlines()[0]
    # The cut keeps the head; whether the kernel's last line survives depends on when the last cut ran.
    assert "bytes removed here" in log


def test_output_tail_keeps_the_end_and_what_a_terminal_shows() -> None:
    cells = [{"outputs": [
        {"output_type": "stream", "name": "stdout", "text": "".join(f"line {i}\n" for i in range(100))},
        {"output_type": "stream", "name": "stdout", "text": "progress 10%\rprogress 100%\n"},
        {"output_type": "execute_result", "data": {"text/plain": "42"}, "metadata": {}, "execution_count": 1},
    ]}]
    tail = output_tail(cells)
    lines = tail.splitlines()
    assert len(lines) == 40 and lines[-1] == "42" and lines[-2] == "progress 100%" and lines[0] == "line 62"


# ----------------------------------------------------------------------------------------------- the kernel


def test_secrets_never_reach_the_kernel_or_the_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = {"SYSTEM_ACCESSTOKEN": "tok-devops-5b1e", "AZURE_CLIENT_SECRET": "tok-sp-77aa",
              "MY_SECRET": "tok-mine-9f"}
    for name, value in tokens.items():
        monkeypatch.setenv(name, value)
    nb = make_notebook(tmp_path / "nb.ipynb", "import os\nprint(dict(os.environ))\nprint(os.environ['VISIBLE'])")
    out = tmp_path / "out"
    result = run(nb, out, secret_env=["MY_SECRET"], env={"VISIBLE": "shown-value"})
    assert result["status"] == "passed"
    assert "shown-value" in result["output_tail"]
    for file in out.rglob("*"):
        text = file.read_text(encoding="utf-8", errors="replace")
        for value in tokens.values():
            assert value not in text, f"{value} leaked into {file.name}"


def test_working_directory_and_pythonpath(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("sibling data")
    lib = tmp_path / "repo_lib"
    lib.mkdir()
    (lib / "helper_mod_xyz.py").write_text("VALUE = 'from the repository'\n")
    nb = make_notebook(tmp_path / "nb.ipynb", "print(open('data.txt').read())",
                       "import helper_mod_xyz\nprint(helper_mod_xyz.VALUE)")
    result = run(nb, tmp_path / "out", pythonpath=[lib])
    assert result["status"] == "passed", result["error"]
    assert "sibling data" in result["output_tail"] and "from the repository" in result["output_tail"]


def test_cancellation_kills_the_kernel_and_records_interrupted(tmp_path: Path) -> None:
    started = tmp_path / "started"
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        f"import os, subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
        f"print(os.getpid(), child.pid, flush=True)\nopen({str(started)!r}, 'w').close()",
        "import time\ntime.sleep(60)",
    )
    out = tmp_path / "out"

    async def cancel_when_started() -> None:
        task = asyncio.ensure_future(run_step(StepRequest(notebook_path=nb, output_dir=out)))
        while not started.exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_when_started())
    result = read_result(out)
    assert result["status"] == "error"
    assert result["error"]["kind"] == "interrupted" and result["error"]["cell_index"] == 1
    executed(out)
    assert left_running(str(tmp_path)) == []  # the kernel and its child ran in tmp_path


def test_interrupting_the_injected_parameters_cell_names_it(tmp_path: Path) -> None:
    started = tmp_path / "started"
    # The parameters cell makes the next cell (the injected one) hang before its code runs.
    nb = make_notebook(tmp_path / "nb.ipynb", "print(x)",
                       parameters=f"x = 0\nimport time\nopen({str(started)!r}, 'w').close()\n"
                       "get_ipython().events.register('pre_run_cell', lambda info: time.sleep(60))")
    out = tmp_path / "out"

    async def cancel_when_started() -> None:
        task = asyncio.ensure_future(run_step(StepRequest(notebook_path=nb, output_dir=out, parameters={"x": 1})))
        while not started.exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_when_started())
    error = read_result(out)["error"]
    assert error["kind"] == "interrupted" and error["cell_index"] is None
    assert error["evalue"].endswith("while the injected parameters cell was running"), error["evalue"]


@pytest.mark.slow
def test_many_steps_run_concurrently_in_one_event_loop(tmp_path: Path) -> None:
    notebooks = [
        make_notebook(tmp_path / f"nb{i}" / "nb.ipynb", "import time\ntime.sleep(0.3)", glue_source("i", i),
                      parameters="i = -1")
        for i in range(5)
    ]

    async def all_at_once() -> list[dict[str, Any]]:
        return await asyncio.gather(*[
            run_step(StepRequest(notebook_path=nb, output_dir=nb.parent / "out", parameters={"i": i},
                                 expect={"i": f"== {i}"}))
            for i, nb in enumerate(notebooks)
        ])

    results = asyncio.run(all_at_once())
    assert [r.status for r in results] == ["passed"] * 5
    assert [r.metrics["i"] for r in results] == list(range(5))


def test_kernel_stdout_goes_to_kernel_log_not_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb",
                       "import sys\nprint('kernel-level stderr line', file=sys.__stderr__, flush=True)")
    out = tmp_path / "out"
    result = run(nb, out)
    assert result["status"] == "passed"
    captured = capfd.readouterr()
    assert "kernel-level stderr line" not in captured.out + captured.err
    assert "kernel-level stderr line" in (out / "kernel.log").read_text()


def test_the_runner_imports_without_the_orchestrator_package() -> None:
    # docs/architecture.md#parts-and-data-flow: a step image needs papermill/nbformat/nbclient only. Make `import orchestrator` fail, then load
    # the runner both ways it is used.
    code = (
        "import sys; sys.modules['orchestrator'] = None\n"
        "import steps.run_notebook\n"
        f"sys.path.insert(0, {str(Path(run_notebook.__file__).parent)!r}); import runpy\n"
        f"runpy.run_path({run_notebook.__file__!r}, run_name='not_main')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(run_notebook.__file__).parents[1],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
