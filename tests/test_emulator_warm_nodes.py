"""Emulated nodes forked from a warm parent (orchestrator/azureml/emulator/warm_nodes.py) are the process bash would
have started: the same argv, working directory, environment, sys.path, sitecustomize, output and exit code; the
parent's own environment never shows; a node stops on a signal to its session like any node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from orchestrator.azureml.emulator.warm_nodes import WarmNodes, direct_argv

PROBE = r'''
import atexit, json, os, sys, tempfile
environ = open("/proc/self/environ", "rb").read().decode(errors="replace")
report = {
    "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path0": sys.path[0],
    "pythonpath_first": sys.path[1], "site": os.environ.get("SITE_RAN"), "name": __name__,
    "tmp": tempfile.gettempdir(), "secret_in_proc": "leaked-value" in environ, "session": os.getsid(0) == os.getpid(),
}
atexit.register(lambda: print("atexit ran"))
print(json.dumps(report, sort_keys=True))
print("to stderr", file=sys.stderr)
code = sys.argv[1]
if code == "raise":
    raise ValueError("boom")
sys.exit(int(code))
'''


@pytest.fixture(scope="module")
def warm() -> Iterator[WarmNodes]:
    nodes = WarmNodes(preload=("json",))  # the mechanism, without paying for mlflow here
    yield nodes
    nodes.close()


@pytest.fixture()
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    monkeypatch.setenv("ORCHESTRATOR_TEST_SECRET", "leaked-value")  # the submitting machine's, never a node's
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "probe.py").write_text(PROBE)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("import os\nos.environ['SITE_RAN'] = 'yes'\n")
    (tmp_path / "tmp").mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(hooks), "TMPDIR": str(tmp_path / "tmp"), "NODE_ONLY": "x"}
    return tmp_path, env


def _by_bash(command: str, work: Path, env: dict[str, str], log: Path) -> int:
    with log.open("ab") as out:
        return subprocess.run(["bash", "-c", command], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True, check=False).returncode


def _warm(warm: WarmNodes, command: str, work: Path, env: dict[str, str], log: Path) -> int:
    argv = direct_argv(command, env)
    assert argv is not None, command
    process = warm.start(argv, cwd=work, env=env, log_path=log)
    assert process is not None
    return process.wait(timeout=30)


@pytest.mark.parametrize("code", ["0", "3", "raise"])
def test_a_warm_node_is_the_process_bash_would_start(warm: WarmNodes, node: tuple[Path, dict[str, str]],
                                                      code: str) -> None:
    root, env = node
    command = f"python code/probe.py '{code}' 'two words' '{{\"json\": 1}}'"
    logs = {how: root / f"{how}.log" for how in ("bash", "warm")}
    assert _warm(warm, command, root, env, logs["warm"]) == _by_bash(command, root, env, logs["bash"]) \
        == {"0": 0, "3": 3, "raise": 1}[code]
    bash, forked = (logs[how].read_text() for how in ("bash", "warm"))
    report, = (json.loads(line) for line in forked.splitlines() if line.startswith("{"))
    assert [report] == [json.loads(line) for line in bash.splitlines() if line.startswith("{")]
    assert report["env"]["NODE_ONLY"] == "x" and "ORCHESTRATOR_TEST_SECRET" not in report["env"]
    assert report["site"] == "yes" and report["name"] == "__main__" and report["session"]
    assert report["argv"] == ["code/probe.py", code, "two words", '{"json": 1}']
    assert report["tmp"] == env["TMPDIR"] and not report["secret_in_proc"]
    assert [line for line in forked.splitlines() if not line.startswith("{")] == \
        [line for line in bash.splitlines() if not line.startswith("{")]  # the traceback too, line for line
    assert ("ValueError: boom" in forked) == (code == "raise")
    assert "to stderr" in forked and "atexit ran" in forked


def test_a_signal_to_the_nodes_session_stops_it(warm: WarmNodes, node: tuple[Path, dict[str, str]]) -> None:
    root, env = node
    (root / "code" / "sleep.py").write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    log = root / "sleep.log"
    argv = direct_argv("python code/sleep.py", env)
    assert argv is not None
    process = warm.start(argv, cwd=root, env=env, log_path=log)
    assert process is not None and process.poll() is None
    deadline = time.monotonic() + 20
    while "started" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=10) == -signal.SIGTERM


@pytest.mark.parametrize("command", [
    "python a.py 'x' | tee log", "python a.py $HOME", "python a.py \"quoted\"", "cd x && python a.py",
    "python -m steps.run", "python3 a.py", "X=1 python a.py", "python a.py 'unterminated", "python a.py *.txt",
    "python a.py `id`", "python",
])
def test_only_one_plain_python_command_forks(command: str) -> None:
    env = {"PATH": str(Path(sys.executable).parent)}
    assert direct_argv(command, env) is None


def test_a_command_for_another_interpreter_runs_with_bash(tmp_path: Path) -> None:
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python").symlink_to("/bin/true")
    assert direct_argv("python a.py", {"PATH": str(other)}) is None
    assert direct_argv("python a.py '$HOME' x", {"PATH": str(Path(sys.executable).parent)}) == \
        ["python", "a.py", "$HOME", "x"]


def test_a_parent_started_ahead_serves_the_first_node_and_closes(node: tuple[Path, dict[str, str]]) -> None:
    """A job starts the parent while its nodes are still staged (engine.JobRun.run): the first node then forks
    from that one parent, and close() ends it."""
    root, env = node
    nodes = WarmNodes(preload=("json",))
    try:
        nodes.prestart()
        nodes.prestart()  # a second job of the same process: still one parent
        deadline = time.monotonic() + 20
        while nodes._server is None and time.monotonic() < deadline:
            time.sleep(0.02)
        server = nodes._server
        assert server is not None and server.poll() is None
        assert _warm(nodes, "python code/probe.py 0", root, env, root / "warm.log") == 0
        assert nodes._server is server
    finally:
        nodes.close()
    assert server.poll() is not None
