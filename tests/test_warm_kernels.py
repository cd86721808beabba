"""Warm kernel start (steps/_warm.py) with real kernels: a kernel started ahead of time is as clean as a cold one,
sees exactly the environment a cold start gives, and every status of the step contract is classified as before.

Each test runs its notebooks one after another through one pool in one event loop, so every step after the first
runs on a kernel that was started while the previous one ran (checked through kernel.log and the pool's count).
Interrupts with warm kernels on are covered by test_local_backend.py's SIGINT/SIGTERM test (a spare is alive
when the signal arrives) and by the cancellation test here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan import load_plan
from steps import _warm, run_notebook
from steps.run_notebook import StepRequest, run_step
from steps.step_result import StepResult
from tests.builders import left_running, make_notebook
from tests.cli_helpers import run_cli

WARM_LINE = "started ahead of time"


def _pool(tmp_path: Path, expected: int, spares: int = 1) -> _warm.KernelPool:
    return _warm.KernelPool(tmp_path / "spares", run_notebook.STEP_FOLDER_ENV, expected=expected, spares=spares)


def _was_warm(out: Path) -> bool:
    return WARM_LINE in (out / "kernel.log").read_text(encoding="utf-8", errors="replace")


async def _in_order(pool: _warm.KernelPool, requests: list[StepRequest]) -> list[StepResult]:
    results = []
    try:
        for request in requests:
            request.kernels = pool
            results.append(await run_step(request))
    finally:
        await pool.close()
    return results


def _printed(result: StepResult) -> Any:
    return json.loads(result.output_tail.strip().splitlines()[-1])


# What a notebook can observe of the process it runs in; every item is something the dirty notebook changes.
PROBE = (
    "import json, os, signal, string, sys\n"
    "import matplotlib\n"
    "fds = []\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try: fds.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
    "    except OSError: pass  # the listing's own descriptor\n"
    "print(json.dumps({'global': 'dirty_global' in globals(), 'module': 'colorsys' in sys.modules,\n"
    "  'patched': getattr(string.capwords, 'patched', False),\n"
    "  'env': os.environ.get('DIRTY_ENV'), 'cwd': os.getcwd(), 'files': [f for f in fds if 'dirty-file' in f],\n"
    "  'signal': signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,\n"
    "  'matplotlib': matplotlib.rcParams['lines.linewidth'], 'path': sys.path, 'environ': dict(os.environ)}))"
)
DIRTY = (
    "import colorsys, os, signal, string, matplotlib\n"
    "dirty_global = 1\n"
    "def patched(*a, **k): return ''\n"
    "patched.patched = True\n"
    "string.capwords = patched\n"
    "os.environ['DIRTY_ENV'] = 'set by another notebook'\n"
    "kept = open('dirty-file.txt', 'w')\n"
    "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
    "matplotlib.rcParams['lines.linewidth'] = 7.5\n"
    "os.chdir('/')"
)


def test_a_warm_kernel_sees_nothing_another_notebook_did_and_the_environment_of_a_cold_start(tmp_path: Path) -> None:
    lib = tmp_path / "repo_lib"
    lib.mkdir()
    dirty = make_notebook(tmp_path / "dirty.ipynb", DIRTY)
    probe = make_notebook(tmp_path / "probe.ipynb", PROBE)
    settings: dict[str, Any] = {"pythonpath": [lib], "env": {"VISIBLE": "shown"}}
    pool = _pool(tmp_path, expected=2)
    results = asyncio.run(_in_order(pool, [
        StepRequest(notebook_path=dirty, output_dir=tmp_path / "out-dirty", **settings),
        StepRequest(notebook_path=probe, output_dir=tmp_path / "out-warm", **settings),
    ]))
    assert [result.status for result in results] == ["passed", "passed"], results[1].error
    assert pool.claimed == 1 and _was_warm(tmp_path / "out-warm")
    cold = asyncio.run(run_step(StepRequest(notebook_path=probe, output_dir=tmp_path / "out-cold", **settings)))
    assert cold.status == "passed" and not _was_warm(tmp_path / "out-cold")

    warm_seen, cold_seen = _printed(results[1]), _printed(cold)
    assert warm_seen["global"] is False and warm_seen["module"] is False and warm_seen["patched"] is False
    assert warm_seen["env"] is None and warm_seen["cwd"] == str(tmp_path) and warm_seen["files"] == []
    assert warm_seen["signal"] is True and warm_seen["matplotlib"] == cold_seen["matplotlib"] != 7.5
    # The same sys.path (PYTHONPATH first) and environment as a cold start, but for the step's own folder.
    assert warm_seen["path"] == cold_seen["path"] and str(lib) in warm_seen["path"], warm_seen["path"]
    warm_env, cold_env = warm_seen.pop("environ"), cold_seen.pop("environ")
    assert warm_env.pop(run_notebook.STEP_OUTPUT_ENV) == str(tmp_path / "out-warm")
    assert cold_env.pop(run_notebook.STEP_OUTPUT_ENV) == str(tmp_path / "out-cold")
    assert warm_env == cold_env and warm_env["VISIBLE"] == "shown"


def test_every_status_is_classified_as_before_on_warm_kernels(tmp_path: Path) -> None:
    def step(name: str, *cells: str, **fields: Any) -> StepRequest:
        notebook = make_notebook(tmp_path / f"{name}.ipynb", *cells)
        # Killed at once when done: a graceful shutdown is no part of what is checked here, and costs time.
        return StepRequest(notebook_path=notebook, output_dir=tmp_path / "out" / name, shutdown_grace_s=0, **fields)

    garbage = tmp_path / "invalid.ipynb"
    garbage.write_text('{"cells": [', encoding="utf-8")
    requests = [
        step("first", "x = 1"),
        step("cell_error", "x = 1", "raise ValueError('boom')"),
        step("expectation", "x = 1", expect={"accuracy": ">= 0.9"}),
        step("cell_timeout", "import time\ntime.sleep(30)", cell_timeout_s=0.5, timeout_s=60),
        step("notebook_timeout", "x = 1", "import time\ntime.sleep(30)", timeout_s=0.5),
        step("os_exit", "import os\nos._exit(3)"),
        step("segfault", "import ctypes\nctypes.string_at(0)"),
        step("oom_kill", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        StepRequest(notebook_path=garbage, output_dir=tmp_path / "out" / "invalid"),
        step("no_kernel", "x = 1", kernel="no-such-kernel", kernel_required=True),
        step("last", "x = 1"),
    ]
    pool = _pool(tmp_path, expected=len(requests), spares=3)
    results = {request.output_dir.name: result for request, result in
               zip(requests, asyncio.run(_in_order(pool, requests)), strict=True)}
    seen = {name: (result.status, result.error.kind if result.error else None) for name, result in results.items()}
    assert seen == {
        "first": ("passed", None), "cell_error": ("failed", "cell_error"),
        "expectation": ("failed", "expectation"), "cell_timeout": ("timed_out", "timeout"),
        "notebook_timeout": ("timed_out", "timeout"), "os_exit": ("crashed", "kernel_died"),
        "segfault": ("crashed", "kernel_died"), "oom_kill": ("crashed", "kernel_died"),
        "invalid": ("error", "invalid_notebook"), "no_kernel": ("error", "no_kernel"), "last": ("passed", None),
    }
    assert "exit code 3" in results["os_exit"].error.evalue  # type: ignore[union-attr]
    assert "killed by SIGSEGV" in results["segfault"].error.evalue  # type: ignore[union-attr]
    assert "killed by SIGKILL" in results["oom_kill"].error.evalue  # type: ignore[union-attr]
    kernels_started = [name for name in results if (tmp_path / "out" / name / "kernel.log").exists()]
    assert [name for name in kernels_started if _was_warm(tmp_path / "out" / name)] == kernels_started[1:]
    assert pool.claimed == len(kernels_started) - 1
    assert left_running(str(tmp_path)) == []  # the kernels and any spare ran in tmp_path
    assert not (tmp_path / "spares").exists()


def test_a_cancelled_step_and_the_closed_pool_leave_no_kernel_behind(tmp_path: Path) -> None:
    started = tmp_path / "started"
    first = make_notebook(tmp_path / "first.ipynb", "x = 1")
    slow = make_notebook(tmp_path / "slow.ipynb", "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
                         f"open({str(started)!r}, 'w').close()", "import time\ntime.sleep(60)")
    pool = _pool(tmp_path, expected=3)  # one more than run: a spare is alive when the run is cancelled

    async def cancel_the_second() -> None:
        await run_step(StepRequest(notebook_path=first, output_dir=tmp_path / "out-first", kernels=pool))
        task = asyncio.ensure_future(run_step(StepRequest(notebook_path=slow, output_dir=tmp_path / "out-slow",
                                                          kernels=pool)))
        while not started.exists():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.started == 2
        await pool.close()

    asyncio.run(cancel_the_second())
    result = json.loads((tmp_path / "out-slow" / "result.json").read_text(encoding="utf-8"))
    assert result["error"]["kind"] == "interrupted" and _was_warm(tmp_path / "out-slow")
    assert left_running(str(tmp_path)) == []


def test_the_plan_setting_and_the_command_line_option_turn_warm_kernels_off(tmp_path: Path) -> None:
    make_notebook(tmp_path / "a.ipynb", "x = 1")
    make_notebook(tmp_path / "b.ipynb", "x = 2")
    (tmp_path / "orchestrator.yml").write_text("version: 1\nwarm_kernels: false\n", encoding="utf-8")
    assert load_plan(tmp_path).warm_kernels is False
    (tmp_path / "orchestrator.yml").write_text("version: 1\n", encoding="utf-8")
    assert load_plan(tmp_path).warm_kernels is True
    out = tmp_path / "run"
    done = run_cli("run", tmp_path, "--jobs", "1", "--no-warm-kernels", "--out", out)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "plan.json").read_text(encoding="utf-8"))["warm_kernels"] is False
    assert [_was_warm(folder) for folder in sorted((out / "steps").iterdir())] == [False, False]
