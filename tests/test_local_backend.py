"""The local backend end to end: the real command, real kernels, real notebooks generated per test."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.builders import make_notebook
from tests.cli_helpers import by_notebook, orchestrator_env, read_results, run_cli

# Real kernels or whole pipelines for every test: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _write_plan(root: Path, text: str) -> None:
    (root / "orchestrator.yml").write_text(text, encoding="utf-8")


def test_after_orders_steps_and_a_file_written_by_one_is_read_by_the_next(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "prep.ipynb", "import time; time.sleep(0.5)", "open('data.txt', 'w').write('42')")
    make_notebook(repo / "use.ipynb", "assert open('data.txt').read() == '42'")
    _write_plan(repo, "version: 1\nnotebooks:\n  - glob: '*.ipynb'\n  - path: use.ipynb\n    after: [prep.ipynb]\n")
    out = tmp_path / "run"
    done = run_cli("run", repo, "--out", out, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    steps = by_notebook(read_results(out))
    assert steps["use.ipynb"]["status"] == "passed"
    assert _time(steps["use.ipynb"]["started_at"]) >= _time(steps["prep.ipynb"]["finished_at"])
    # Its kernel was forked from the run's warm parent (steps/_warm.py), whose folder is gone with the run.
    assert "forked from a warm parent" in (out / "steps" / "use" / "kernel.log").read_text(encoding="utf-8")
    assert not (out / ".warm-parents").exists()


def test_steps_run_concurrently_up_to_jobs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        make_notebook(repo / f"{name}.ipynb", "import time; time.sleep(1.5)")
    parallel = run_cli("run", repo, "--out", tmp_path / "parallel", "--jobs", "2")
    serial = run_cli("run", repo, "--out", tmp_path / "serial", "--jobs", "1")
    assert parallel.returncode == 0 and serial.returncode == 0, parallel.stderr + serial.stderr

    def steps(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        found = by_notebook(read_results(run_dir))
        first, second = sorted((found["a.ipynb"], found["b.ipynb"]), key=lambda step: step["started_at"])
        return first, second

    def cells_done(run_dir: Path, step: dict[str, Any]) -> datetime:
        # When the notebook's last cell went idle (nbclient's record_timing), before its kernel exits.
        executed = json.loads((run_dir / "steps" / step["step"] / step["output_notebook"]).read_text())
        return max(_time(cell["metadata"]["execution"]["iopub.status.idle"]) for cell in executed["cells"]
                   if cell["cell_type"] == "code")

    # Both notebooks sleep 1.5 s: with two slots they run side by side. With one, the second starts once
    # the first one's cells are done (its kernel may still be exiting, which takes no slot).
    first, second = steps(tmp_path / "parallel")
    assert _time(second["started_at"]) < cells_done(tmp_path / "parallel", first)
    first, second = steps(tmp_path / "serial")
    assert _time(second["started_at"]) >= cells_done(tmp_path / "serial", first)


def test_a_failed_dependency_skips_what_comes_after_and_exit_code_is_1(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "prep.ipynb", "raise ValueError('no data')")
    make_notebook(repo / "use.ipynb", "print('never')")
    _write_plan(repo, "version: 1\nnotebooks:\n  - glob: '*.ipynb'\n  - path: use.ipynb\n    after: [prep.ipynb]\n")
    out = tmp_path / "run"
    done = run_cli("run", repo, "--out", out)
    assert done.returncode == 1
    results = read_results(out)
    steps = by_notebook(results)
    assert steps["prep.ipynb"]["status"] == "failed"
    assert steps["prep.ipynb"]["error"]["ename"] == "ValueError"
    assert steps["use.ipynb"]["status"] == "skipped"
    assert "prep.ipynb" in steps["use.ipynb"]["reason"]
    assert results["status"] == "failed" and results["counts"]["failed"] == 1 and results["counts"]["skipped"] == 1
    for name in ("junit.xml", "report.html", "plan.json"):
        assert (out / name).is_file()


def test_a_notebooks_own_error_is_never_retried(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "bad.ipynb", "open('attempts.txt', 'a').write('x')", "raise RuntimeError('deterministic')")
    _write_plan(repo, "version: 1\ndefaults: {retries: 2}\n")
    done = run_cli("run", repo, "--out", tmp_path / "run")
    assert done.returncode == 1
    step = read_results(tmp_path / "run")["steps"][0]
    assert step["attempts"] == 1
    assert (repo / "attempts.txt").read_text() == "x"


def test_a_kernel_that_fails_to_start_is_retried(tmp_path: Path) -> None:
    kernels = tmp_path / "jupyter" / "kernels" / "broken"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-c", "import sys; sys.exit(3)", "{connection_file}"],
         "display_name": "broken", "language": "python"}))
    repo = tmp_path / "repo"
    make_notebook(repo / "nb.ipynb", "print(1)")
    _write_plan(repo, "version: 1\ndefaults: {retries: 1}\nnotebooks:\n  - path: nb.ipynb\n    kernel: broken\n")
    env = orchestrator_env(JUPYTER_PATH=str(tmp_path / "jupyter"))
    done = run_cli("run", repo, "--out", tmp_path / "run", env=env)
    assert done.returncode == 1
    step = read_results(tmp_path / "run")["steps"][0]
    assert step["status"] == "error" and step["error"]["kind"] == "infrastructure"
    assert step["attempts"] == 2
    assert "retrying" in done.stderr


def test_gpu_step_is_skipped_without_a_gpu_and_runs_on_cpu_with_fallback(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "gpu.ipynb", "import os; print('CUDA=' + repr(os.environ.get('CUDA_VISIBLE_DEVICES')))")
    _write_plan(repo, "version: 1\nnotebooks:\n  - path: gpu.ipynb\n    target: gpu\n")
    env = orchestrator_env(CUDA_VISIBLE_DEVICES="")
    skipped = run_cli("run", repo, "--out", tmp_path / "skip", env=env)
    assert skipped.returncode == 0, skipped.stderr
    step = read_results(tmp_path / "skip")["steps"][0]
    assert step["status"] == "skipped" and step["reason"] == "no GPU on this machine"

    fallback = run_cli("run", repo, "--out", tmp_path / "cpu", "--gpu-fallback", "cpu", env=env)
    assert fallback.returncode == 0, fallback.stderr
    step = read_results(tmp_path / "cpu")["steps"][0]
    assert step["status"] == "passed"
    assert any("CPU" in warning for warning in step["warnings"])


def test_gpu_steps_get_one_gpu_each(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("g1", "g2", "g3"):
        make_notebook(repo / f"{name}.ipynb",
                      "import os, time; open(os.environ['CUDA_VISIBLE_DEVICES'] + '-' + str(time.time()), 'w'); time.sleep(1)",
                      "print('CUDA=' + os.environ['CUDA_VISIBLE_DEVICES'])")
    _write_plan(repo, "version: 1\ndefaults: {target: gpu}\n")
    # Two "GPUs" declared through CUDA_VISIBLE_DEVICES: three notebooks share them, never two on one.
    done = run_cli("run", repo, "--out", tmp_path / "run", env=orchestrator_env(CUDA_VISIBLE_DEVICES="5,7"))
    assert done.returncode == 0, done.stderr
    steps = read_results(tmp_path / "run")["steps"]
    devices = [step["output_tail"].split("CUDA=")[1].strip() for step in steps]
    assert sorted(set(devices)) <= ["5", "7"] and len(set(devices)) == 2
    intervals = sorted((_time(s["started_at"]), _time(s["finished_at"]), d) for s, d in zip(steps, devices))
    for (start_a, end_a, dev_a), (start_b, end_b, dev_b) in zip(intervals, intervals[1:]):
        if dev_a == dev_b:
            assert start_b >= end_a


def _descendants_of(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _running(pid: int, name: str | None = None) -> bool:
    """Alive (not a zombie) and, when given, called `name`; a process may exit between listing and reading
    (a kernel's short-lived launch helpers do), which counts as not running."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (name is None or process.name() == name)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_every_kernel_records_what_finished_and_exits_130(tmp_path: Path, signum: int) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "a_quick.ipynb", "print('done')")
    make_notebook(repo / "b_slow.ipynb", "import subprocess; child = subprocess.Popen(['sleep', '300'])",
                  "import time; time.sleep(300)")
    make_notebook(repo / "c_later.ipynb", "print('later')")
    _write_plan(repo, "version: 1\nnotebooks:\n  - glob: '*.ipynb'\n  - path: c_later.ipynb\n    after: [b_slow.ipynb]\n")
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(repo), "--out", str(out)],
                               env=orchestrator_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    sleepers: list[int] = []
    quick_done = False
    while time.monotonic() < deadline and not (sleepers and quick_done):
        time.sleep(0.2)
        sleepers = [p for p in _descendants_of(process.pid) if _running(p, "sleep")]
        quick_done = (out / "results.json").exists() and read_results(out)["counts"]["passed"] == 1
    assert sleepers and quick_done, "the slow notebook never started its child process"
    descendants = _descendants_of(process.pid)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    time.sleep(0.5)
    alive = [pid for pid in descendants if _running(pid)]
    assert alive == [], f"orphaned processes: {alive}"
    results = read_results(out)
    assert results["status"] == "interrupted"
    steps = by_notebook(results)
    assert steps["a_quick.ipynb"]["status"] == "passed"
    assert steps["b_slow.ipynb"]["status"] == "error" and steps["b_slow.ipynb"]["error"]["kind"] == "interrupted"
    assert steps["c_later.ipynb"]["status"] == "skipped"
    assert (out / "report.html").is_file() and (out / "junit.xml").is_file()
    assert "Traceback" not in stderr


def test_rerun_failed_runs_only_what_did_not_pass_and_what_comes_after(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "a_ok.ipynb", "open('a_runs.txt', 'a').write('x')")
    make_notebook(repo / "b_flaky.ipynb", "import os\nassert os.path.exists('fixed.txt'), 'not fixed yet'")
    make_notebook(repo / "c_after.ipynb", "open('c_runs.txt', 'a').write('x')")
    _write_plan(repo, "version: 1\nnotebooks:\n  - glob: '*.ipynb'\n  - path: c_after.ipynb\n    after: [b_flaky.ipynb]\n")
    first = tmp_path / "first"
    assert run_cli("run", repo, "--out", first).returncode == 1
    (repo / "fixed.txt").write_text("yes")
    second = tmp_path / "second"
    done = run_cli("rerun", first, "--failed", "--out", second)
    assert done.returncode == 0, done.stderr
    results = read_results(second)
    assert results["repairs"] == read_results(first)["run_id"]
    steps = by_notebook(results)
    assert steps["a_ok.ipynb"]["carried_over_from"] == results["repairs"]
    assert steps["b_flaky.ipynb"]["status"] == "passed" and "carried_over_from" not in steps["b_flaky.ipynb"]
    assert steps["c_after.ipynb"]["status"] == "passed"
    assert (repo / "a_runs.txt").read_text() == "x"  # not run again
    assert (repo / "c_runs.txt").read_text() == "x"  # skipped the first time, ran in the repair
    assert (second / "steps" / steps["a_ok.ipynb"]["step"] / "a_ok.ipynb").is_file()


def test_invalid_plan_exits_2_with_a_clear_message_and_no_traceback(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "nb.ipynb", "print(1)")
    _write_plan(repo, "version: 1\ndefaults:\n  timeout: soon\n")
    done = run_cli("run", repo, "--out", tmp_path / "run")
    assert done.returncode == 2
    assert "orchestrator.yml" in done.stderr and "timeout" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    done = run_cli("run", tmp_path, "--jobs", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    done = run_cli("run", tmp_path, "--param", "not an assignment")
    assert done.returncode == 2 and "NAME=VALUE" in done.stderr


def test_plain_progress_lines_when_not_a_terminal(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "nb.ipynb", "print(1)")
    done = run_cli("run", repo, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "step=nb status=running" in done.stderr
    assert "step=nb status=passed" in done.stderr
    assert "run status=passed" in done.stderr


def test_secrets_never_reach_the_kernel_or_the_run_folder(tmp_path: Path) -> None:
    token = "tok-SECRET-4c1f9e"
    repo = tmp_path / "repo"
    make_notebook(repo / "leak.ipynb", "import os\nprint(dict(os.environ))",
                  "print(os.environ.get('SYSTEM_ACCESSTOKEN'), os.environ.get('MY_API_KEY'))")
    _write_plan(repo, "version: 1\nsecret_env: [MY_API_KEY]\n")
    out = tmp_path / "run"
    done = run_cli("run", repo, "--out", out, env=orchestrator_env(SYSTEM_ACCESSTOKEN=token, MY_API_KEY=token + "-2"))
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(encoding="utf-8", errors="replace"), path


def test_a_file_the_notebook_left_open_is_flushed_before_the_next_step_reads_it(tmp_path: Path) -> None:
    # The kernel exits cleanly (as under papermill), so buffered writes reach the disk; a kill would lose them.
    repo = tmp_path / "repo"
    make_notebook(repo / "write.ipynb", "handle = open('out.txt', 'w')\nhandle.write('all of it')")
    make_notebook(repo / "read.ipynb", "assert open('out.txt').read() == 'all of it'")
    _write_plan(repo, "version: 1\nnotebooks:\n  - glob: '*.ipynb'\n  - path: read.ipynb\n    after: [write.ipynb]\n")
    done = run_cli("run", repo, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert (repo / "out.txt").read_text() == "all of it"


def test_a_stop_requested_from_another_thread_stops_the_run_and_records_why(tmp_path: Path) -> None:
    # What the DevOps cancellation watcher does when the server job is cancelled (orchestrator.running).
    import threading

    from orchestrator.backends import RunOptions
    from orchestrator.backends.local import LocalBackend
    from orchestrator.plan import load_plan
    from orchestrator.progress import PlainProgress
    from orchestrator.run_folder import prepare_run_dir

    repo = tmp_path / "repo"
    make_notebook(repo / "slow.ipynb", "import time; time.sleep(120)")
    options = RunOptions(run_dir=prepare_run_dir(tmp_path / "run", "r1"), run_id="r1")
    timer = threading.Timer(3.0, options.stop.request, args=("DevOps: the job was canceled",))
    timer.start()
    try:
        outcome = LocalBackend().run(load_plan(repo), options, PlainProgress(io.StringIO()))
    finally:
        timer.cancel()
    assert outcome.status == "interrupted"
    results = read_results(tmp_path / "run")
    assert results["interrupted_by"] == "DevOps: the job was canceled"
    assert results["steps"][0]["error"]["kind"] == "interrupted"


def test_a_step_finds_the_files_of_the_steps_it_runs_after_in_their_step_folders(tmp_path: Path) -> None:
    # The hand-off that also works on Azure ML, where nodes share no working copy (steps/run_notebook.py).
    repo = tmp_path / "repo"
    make_notebook(repo / "data" / "make.ipynb",
                  "import os, pathlib\n(pathlib.Path(os.environ['ORCHESTRATOR_STEP_OUTPUT']) / 'table.csv').write_text('a,b')")
    make_notebook(repo / "use.ipynb",
                  "import json, os, pathlib\nfolders = json.loads(os.environ['ORCHESTRATOR_AFTER_OUTPUTS'])\n"
                  "assert (pathlib.Path(folders['data/make.ipynb']) / 'table.csv').read_text() == 'a,b'")
    _write_plan(repo, "version: 1\nnotebooks:\n  - glob: '**/*.ipynb'\n  - path: use.ipynb\n    after: [data/make.ipynb]\n")
    out = tmp_path / "run"
    done = run_cli("run", repo, "--out", out)
    assert done.returncode == 0, done.stderr
    assert (out / "steps" / "data_make" / "table.csv").read_text() == "a,b"
    assert not (repo / "data" / "table.csv").exists()
