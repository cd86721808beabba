"""steps/run_notebook.py as a script, the way every Azure ML node runs it: exit codes and files."""

from __future__ import annotations

import pytest

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import nbformat
import psutil

from tests.builders import glue_source, make_notebook

# Real kernels or whole pipelines for every test: left out of `make test-fast`.
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "steps" / "run_notebook.py"


def script(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def result_of(out: Path) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads((out / "result.json").read_text(encoding="utf-8")))


def valid_notebook(path: Path) -> None:
    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))  # type: ignore[no-untyped-call]


def test_passed_exits_0_from_any_folder(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nbs" / "train.ipynb", "print(epochs)", glue_source("acc", 0.95),
                       parameters="epochs = 1")
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = script(nb, "--output-dir", out, "--notebook-rel", "nbs/train.ipynb", "--parameters", '{"epochs": 7}',
                  "--expect", '{"acc": ">= 0.9"}', "--timeout", "60", "--target", "gpu", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    result = result_of(out)
    assert result["status"] == "passed" and result["step"] == "nbs_train" and result["target"] == "gpu"
    assert result["metrics"] == {"acc": 0.95} and result["output_tail"] == "7"
    assert "step=nbs_train status=passed" in done.stderr
    valid_notebook(out / "train.ipynb")


def test_failed_exits_1_and_leaves_the_files(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "1 / 0")
    out = tmp_path / "out"
    done = script(nb, "--output-dir", out, cwd=tmp_path)
    assert done.returncode == 1
    assert result_of(out)["error"]["ename"] == "ZeroDivisionError"
    assert (out / "nb.ipynb").exists() and (out / "kernel.log").exists()


def test_invalid_notebook_exits_1_with_a_result(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    out = tmp_path / "out"
    done = script(bad, "--output-dir", out, cwd=tmp_path)
    assert done.returncode == 1
    assert result_of(out)["error"]["kind"] == "invalid_notebook"


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    out = tmp_path / "out"
    assert script(nb, cwd=tmp_path).returncode == 2  # no --output-dir
    bad_json = script(nb, "--output-dir", out, "--parameters", "{epochs: 1}", cwd=tmp_path)
    assert bad_json.returncode == 2 and "--parameters" in bad_json.stderr
    assert script(nb, "--output-dir", out, "--parameters", "[1]", cwd=tmp_path).returncode == 2
    assert script(nb, "--output-dir", out, "--timeout", "-1", cwd=tmp_path).returncode == 2
    assert script(nb, "--output-dir", out, "--env", "NOVALUE", cwd=tmp_path).returncode == 2
    assert not out.exists()


def test_after_result_that_did_not_pass_skips_and_exits_0(tmp_path: Path) -> None:
    nb = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    previous = tmp_path / "prev"
    previous.mkdir()
    (previous / "result.json").write_text(json.dumps({"step": "prep", "notebook": "prep.ipynb", "status": "crashed"}))
    out = tmp_path / "out"
    done = script(nb, "--output-dir", out, "--after-result", previous, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = result_of(out)
    assert result["status"] == "skipped" and "prep.ipynb" in result["reason"]


def test_sigterm_kills_the_kernel_tree_and_leaves_an_interrupted_result(tmp_path: Path) -> None:
    started = tmp_path / "started"
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        "import os, subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
        f"print(os.getpid(), child.pid, flush=True)\nopen({str(started)!r}, 'w').close()",
        "import time\ntime.sleep(60)",
    )
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(nb), "--output-dir", str(out)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    kernel_pids = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 1, stderr
    result = result_of(out)
    assert result["status"] == "error" and result["error"]["kind"] == "interrupted"
    assert result["error"]["cell_index"] == 1
    valid_notebook(out / "nb.ipynb")
    assert kernel_pids and not any(_alive(pid) for pid in kernel_pids)


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
        time.sleep(0.05)
    return True


def test_the_kernel_is_told_its_output_folder_and_the_folders_of_the_steps_it_runs_after(tmp_path: Path) -> None:
    # On Azure ML each --after-result is the dependency node's mounted output: the notebook reads its files
    # there, and writes its own into --output-dir (the node's output), since nodes share no working copy.
    previous = tmp_path / "prev"
    previous.mkdir()
    (previous / "result.json").write_text(json.dumps({"step": "prep", "notebook": "data/prep.ipynb", "status": "passed"}))
    (previous / "table.csv").write_text("a,b")
    nb = make_notebook(
        tmp_path / "nb.ipynb",
        "import json, os, pathlib\nfolders = json.loads(os.environ['ORCHESTRATOR_AFTER_OUTPUTS'])\n"
        "table = (pathlib.Path(folders['data/prep.ipynb']) / 'table.csv').read_text()\n"
        "(pathlib.Path(os.environ['ORCHESTRATOR_STEP_OUTPUT']) / 'copy.csv').write_text(table)",
    )
    out = tmp_path / "out"
    done = script(nb, "--output-dir", out, "--after-result", previous, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + json.dumps(result_of(out).get("error"))
    assert (out / "copy.csv").read_text() == "a,b"
