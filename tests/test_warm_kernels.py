"""Warm kernel start (steps/_warm.py, steps/_zygote.py) with real kernels: a kernel forked from a warm parent is as
clean as a cold one, sees exactly the environment, sys.path, modules and confinement a cold start gives, and every
status of the step contract is classified as before.

Each test runs its notebooks one after another through one pool in one event loop, so every kernel after the first
is forked from a parent that has already served another notebook (checked through kernel.log and the pool's count).
Interrupts with warm kernels on are also covered by test_local_backend.py's SIGINT/SIGTERM test (the warm parent is
one of the orchestrator's descendants that must be gone), and the hostile notebooks of test_kernel_isolation.py run
through `orchestrator run` and `handle`, so on forked kernels.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.warm_start import start_warm_parent
from orchestrator.plan import load_plan
from steps import _isolation, _kernel, _warm, run_notebook
from steps.run_notebook import StepRequest, run_step
from steps.step_result import StepResult
from tests.builders import left_running, make_notebook
from tests.cli_helpers import orchestrator_env, run_cli

WARM_LINE = _kernel.FORKED_LINE


def _pool(tmp_path: Path) -> _warm.KernelPool:
    return _warm.KernelPool(tmp_path / "parents", run_notebook.STEP_FOLDER_ENV)


def _was_warm(out: Path) -> bool:
    return WARM_LINE in (out / "kernel.log").read_text(encoding="utf-8", errors="replace")


async def _in_order(pool: _warm.KernelPool, requests: list[StepRequest]) -> list[StepResult]:
    results = []
    try:
        for request in requests:
            request.kernels = pool
            results.append(await run_step(request))
    finally:
        pool.close()
    return results


def _seen(result: StepResult, out: Path) -> Any:
    assert result.status == "passed", result.error
    return json.loads((out / "seen.json").read_text(encoding="utf-8"))


# What a notebook can observe of the process it runs in; every item is something the dirty notebook changes, or
# something a fork could get wrong (the modules loaded, the command line, the confinement, the random state).
PROBE = (
    "import gc, json, os, random, signal, string, sys, weakref\n"
    "class Cycle: pass\n"
    "cycle = Cycle(); cycle.me = cycle; ref = weakref.ref(cycle); del cycle; gc.collect()\n"
    "import matplotlib\n"
    "fds = []\n"
    "for fd in os.listdir('/proc/self/fd'):\n"
    "    try: fds.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
    "    except OSError: pass  # the listing's own descriptor\n"
    "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
    "seen = os.path.join(os.environ['ORCHESTRATOR_STEP_OUTPUT'], 'seen.json')\n"
    "open(seen, 'w').write(json.dumps({'global': 'dirty_global' in globals(), 'module': 'colorsys' in sys.modules,\n"
    "  'patched': getattr(string.capwords, 'patched', False),\n"
    "  'env': os.environ.get('DIRTY_ENV'), 'cwd': os.getcwd(), 'files': [f for f in fds if 'dirty-file' in f],\n"
    "  'signal': signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,\n"
    "  'matplotlib': matplotlib.rcParams['lines.linewidth'], 'path': sys.path, 'environ': dict(os.environ),\n"
    "  'modules': sorted(sys.modules), 'argv': sys.argv[1:] + sys.orig_argv, 'random': random.random(),\n"
    "  'gc': [gc.isenabled(), gc.get_threshold(), ref() is None], 'frozen': gc.get_freeze_count(),\n"
    "  'psutil_ready': sys.modules['ipykernel.kernelbase'].psutil is not None,\n"
    "  'caps': {k: v.strip() for k, v in status.items() if k.startswith('Cap')}, 'pid': os.getpid(),\n"
    "  'processes': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), 'ppid': os.getppid()}))"
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
    "import atexit\n"
    "out = os.environ['ORCHESTRATOR_STEP_OUTPUT']\n"
    "atexit.register(lambda: open(os.path.join(out, 'atexit-ran'), 'w').close())\n"
    "kernel = get_ipython().kernel\n"
    "def marking(channel, handler):\n"
    "    async def handle(*args):\n"
    "        open(os.path.join(out, f'shutdown-on-{channel}'), 'w').close()\n"
    "        return await handler(*args)\n"
    "    return handle\n"
    "for channel, handlers in (('shell', kernel.shell_handlers), ('control', kernel.control_handlers)):\n"
    "    handlers['shutdown_request'] = marking(channel, handlers['shutdown_request'])\n"
    "os.chdir('/')"
)


@pytest.mark.slow
def test_a_forked_kernel_sees_nothing_another_notebook_did_and_exactly_what_a_cold_start_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "repo_lib"
    lib.mkdir()
    dirty = make_notebook(tmp_path / "dirty.ipynb", DIRTY)
    probe = make_notebook(tmp_path / "probe.ipynb", PROBE)
    token = f"LEAKME-{uuid.uuid4().hex}"
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", token)  # the orchestrator's own: no kernel, and no warm parent, has it
    settings: dict[str, Any] = {"pythonpath": [lib], "env": {"VISIBLE": "shown"}}
    pool = _pool(tmp_path)
    parent_environ: list[bytes] = []

    async def run() -> list[StepResult]:
        try:
            results = []
            for name, notebook in (("dirty", dirty), ("warm", probe), ("warm2", probe)):
                results.append(await run_step(StepRequest(notebook_path=notebook, output_dir=tmp_path / f"out-{name}",
                                                          kernels=pool, **settings)))
                if not parent_environ:
                    [parent] = pool._parents.values()
                    parent_environ.append(Path(f"/proc/{parent.process.pid}/environ").read_bytes())
            return results
        finally:
            pool.close()

    results = asyncio.run(run())
    assert [result.status for result in results] == ["passed"] * 3, results[1].error
    assert pool.forked == 3 and pool.started == 1 and _was_warm(tmp_path / "out-warm")
    assert (tmp_path / "out-dirty" / "atexit-ran").exists()  # a forked kernel's exit runs atexit handlers
    # Asked to exit on the shell channel: on the control channel ipykernel could hang for 10 s (steps/_kernel.py).
    assert [path.name for path in (tmp_path / "out-dirty").glob("shutdown-on-*")] == ["shutdown-on-shell"]
    cold = asyncio.run(run_step(StepRequest(notebook_path=probe, output_dir=tmp_path / "out-cold", **settings)))
    assert cold.status == "passed" and not _was_warm(tmp_path / "out-cold")
    assert token.encode() not in parent_environ[0] and b"VISIBLE=shown" in parent_environ[0]

    warm_seen, second_seen = _seen(results[1], tmp_path / "out-warm"), _seen(results[2], tmp_path / "out-warm2")
    cold_seen = _seen(cold, tmp_path / "out-cold")
    assert warm_seen["global"] is False and warm_seen["module"] is False and warm_seen["patched"] is False
    assert warm_seen["env"] is None and warm_seen["cwd"] == str(tmp_path) and warm_seen["files"] == []
    assert warm_seen["signal"] is True and warm_seen["matplotlib"] == cold_seen["matplotlib"] != 7.5
    # The same sys.path (PYTHONPATH first), modules, command line and confinement as a cold start: PID 1 is the
    # namespace's init, the kernel the only other process, the capabilities those of a cold root kernel.
    assert warm_seen["path"] == cold_seen["path"] and str(lib) in warm_seen["path"], warm_seen["path"]
    assert warm_seen["modules"] == cold_seen["modules"]
    assert [_no_folder(a) for a in warm_seen["argv"]] == [_no_folder(a) for a in cold_seen["argv"]]
    for seen in (warm_seen, cold_seen):
        assert seen["processes"] == [1, seen["pid"]] and seen["ppid"] == 1, seen["processes"]
    assert warm_seen["caps"] == cold_seen["caps"]
    # The garbage collector works as in a cold kernel (a notebook's own cycles are collected); what the warm parent
    # imported is frozen, so that collections in a kernel do not copy the pages it shares with the parent.
    assert warm_seen["gc"] == cold_seen["gc"] == [True, cold_seen["gc"][1], True]
    assert cold_seen["frozen"] == 0 and warm_seen["frozen"] > 10_000
    # ipykernel's shutdown finds psutil already imported (steps/_zygote.py), though not in sys.modules (compared above).
    assert warm_seen["psutil_ready"] is True and cold_seen["psutil_ready"] is False
    assert warm_seen["random"] != second_seen["random"]  # reseeded in each child, as in a fresh interpreter
    warm_env, cold_env = warm_seen.pop("environ"), cold_seen.pop("environ")
    assert warm_env.pop(run_notebook.STEP_OUTPUT_ENV) == str(tmp_path / "out-warm")
    assert cold_env.pop(run_notebook.STEP_OUTPUT_ENV) == str(tmp_path / "out-cold")
    assert warm_env == cold_env and warm_env["VISIBLE"] == "shown" and "SYSTEM_ACCESSTOKEN" not in warm_env
    assert left_running(str(tmp_path)) == []


def _no_folder(argument: str) -> str:
    return re.sub(r"nbk-[^/]+", "nbk-X", argument)


@pytest.mark.slow
def test_every_status_is_classified_as_before_on_forked_kernels(tmp_path: Path) -> None:
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
        step("memory_limit", "import resource\nresource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
                             "x = bytearray(2 << 30)"),
        StepRequest(notebook_path=garbage, output_dir=tmp_path / "out" / "invalid"),
        step("no_kernel", "x = 1", kernel="no-such-kernel", kernel_required=True),
        step("last", "x = 1"),
    ]
    pool = _pool(tmp_path)
    results = {request.output_dir.name: result for request, result in
               zip(requests, asyncio.run(_in_order(pool, requests)), strict=True)}
    seen = {name: (result.status, result.error.kind if result.error else None) for name, result in results.items()}
    assert seen == {
        "first": ("passed", None), "cell_error": ("failed", "cell_error"),
        "expectation": ("failed", "expectation"), "cell_timeout": ("timed_out", "timeout"),
        "notebook_timeout": ("timed_out", "timeout"), "os_exit": ("crashed", "kernel_died"),
        "segfault": ("crashed", "kernel_died"), "oom_kill": ("crashed", "kernel_died"),
        "memory_limit": ("failed", "cell_error"),
        "invalid": ("error", "invalid_notebook"), "no_kernel": ("error", "no_kernel"), "last": ("passed", None),
    }
    assert "exit code 3" in results["os_exit"].error.evalue  # type: ignore[union-attr]
    assert "killed by SIGSEGV" in results["segfault"].error.evalue  # type: ignore[union-attr]
    assert "killed by SIGKILL" in results["oom_kill"].error.evalue  # type: ignore[union-attr]
    assert results["memory_limit"].error.ename == "MemoryError"  # type: ignore[union-attr]
    kernels_started = [name for name in results if (tmp_path / "out" / name / "kernel.log").exists()]
    assert [name for name in kernels_started if _was_warm(tmp_path / "out" / name)] == kernels_started
    assert pool.forked == len(kernels_started) == 10
    assert left_running(str(tmp_path)) == []  # the kernels and the warm parent ran in tmp_path
    assert not (tmp_path / "parents").exists()


def test_a_cancelled_step_and_the_closed_pool_leave_no_kernel_behind(tmp_path: Path) -> None:
    started = tmp_path / "started"
    first = make_notebook(tmp_path / "first.ipynb", "x = 1")
    slow = make_notebook(tmp_path / "slow.ipynb", "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
                         f"open({str(started)!r}, 'w').close()", "import time\ntime.sleep(60)")
    pool = _pool(tmp_path)

    async def cancel_the_second() -> None:
        await run_step(StepRequest(notebook_path=first, output_dir=tmp_path / "out-first", kernels=pool))
        task = asyncio.ensure_future(run_step(StepRequest(notebook_path=slow, output_dir=tmp_path / "out-slow",
                                                          kernels=pool)))
        while not started.exists():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.forked == 2
        pool.close()

    asyncio.run(cancel_the_second())
    result = json.loads((tmp_path / "out-slow" / "result.json").read_text(encoding="utf-8"))
    assert result["error"]["kind"] == "interrupted" and _was_warm(tmp_path / "out-slow")
    assert left_running(str(tmp_path)) == []


def test_a_killed_orchestrator_leaves_no_warm_parent_and_no_kernel_behind(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    started = tmp_path / "started"
    make_notebook(repo / "slow.ipynb", "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\n"
                  f"open({str(started)!r}, 'w').close()", "import time\ntime.sleep(60)")
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(repo), "--out", str(tmp_path / "run")],
                               env=orchestrator_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert started.exists()
    assert _was_warm(tmp_path / "run" / "steps" / "slow")
    process.kill()  # SIGKILL: no handler runs; the warm parent sees its input close and the kernels their parent die
    process.wait()
    assert left_running(str(tmp_path), within_s=5) == []


@pytest.mark.slow
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


def test_the_parent_started_before_the_run_serves_its_first_kernel(tmp_path: Path) -> None:
    """orchestrator/backends/warm_start.py guesses the first kernel's parent from the plan alone (no jupyter_client):
    the run's pool adopts it, and the kernel is forked from it, not from a second parent."""
    make_notebook(tmp_path / "a.ipynb", "x = 1")
    plan = load_plan(tmp_path)
    assert start_warm_parent(plan)
    pool = _pool(tmp_path)
    pythonpath = [tmp_path / folder for folder in plan.steps[0].pythonpath]  # as the local backend asks
    result = asyncio.run(_in_order(pool, [StepRequest(notebook_path=tmp_path / "a.ipynb", output_dir=tmp_path / "out",
                                                      pythonpath=pythonpath)]))
    assert result[0].status == "passed" and _was_warm(tmp_path / "out")
    assert pool.forked == 1 and pool.started == 0
    assert left_running(str(tmp_path)) == []


def test_a_parent_started_early_on_a_machine_that_cannot_confine_kernels_is_ended_at_once(tmp_path: Path) -> None:
    """The early parent starts before the machine's isolation is probed (its imports overlap the probe); where kernels
    cannot be confined no kernel would fork from it, so it is killed and not kept for the run."""
    unconfined = _isolation.Isolation(_isolation.NONE, reason="test")
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert not _warm.start_early(argv, {"PATH": os.defpath}, tmp_path, probe=lambda: unconfined)
    assert _warm._EARLY == {} and left_running(str(tmp_path)) == []


def test_a_kernel_the_fork_cannot_reproduce_starts_cold() -> None:
    """Only `PYTHON -m ipykernel_launcher|ipykernel ...` on a machine with namespaces, with an absolute PYTHONPATH."""
    confined = _isolation.Isolation(_isolation.PID_NAMESPACE, wrapper=("unshare",))
    unconfined = _isolation.Isolation(_isolation.NONE, reason="test")
    env = {"PATH": os.defpath}
    ipykernel = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert _warm._parent_key(ipykernel, env, confined, ()) is not None
    for argv, environ, isolation in [
        (["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"], env, confined),
        ([sys.executable, "-c", "import ipykernel", "{connection_file}"], env, confined),
        (["no-such-python-xyz", "-m", "ipykernel_launcher", "-f", "{connection_file}"], env, confined),
        (ipykernel, env, unconfined),  # strays of an unconfined kernel are found through /proc/<pid>/environ
        (ipykernel, {**env, "PYTHONPATH": "lib"}, confined),  # relative: resolved against the parent's folder
    ]:
        assert _warm._parent_key(argv, environ, isolation, ()) is None, (argv, environ, isolation)


def test_a_fork_that_fails_starts_the_kernel_cold_and_says_so(tmp_path: Path) -> None:
    first = make_notebook(tmp_path / "first.ipynb", "x = 1")
    second = make_notebook(tmp_path / "second.ipynb", "print('ran')")
    pool = _pool(tmp_path)

    async def run() -> StepResult:
        await run_step(StepRequest(notebook_path=first, output_dir=tmp_path / "out-first", kernels=pool))
        [parent] = pool._parents.values()
        parent.process.kill()  # the warm parent dies between two steps
        parent.process.wait()
        try:
            return await run_step(StepRequest(notebook_path=second, output_dir=tmp_path / "out-second", kernels=pool))
        finally:
            pool.close()

    result = asyncio.run(run())
    log = (tmp_path / "out-second" / "kernel.log").read_text(encoding="utf-8")
    assert result.status == "passed" and "ran" in result.output_tail and pool.forked == 1
    # Either the fork was tried and failed (said so), or the pool already knew the parent was gone: cold either way.
    last_start = log.split("starting kernel")[-1]
    assert WARM_LINE not in last_start and ("the forked kernel did not start" in log or WARM_LINE not in log)
    assert left_running(str(tmp_path)) == []
