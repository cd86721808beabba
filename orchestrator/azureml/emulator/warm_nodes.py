"""Emulated nodes started from a warm parent: the same process a node's `python SCRIPT ...` command starts, without
paying for its imports again (node_server.py says what the child is set up as).

Why: every node of a compiled pipeline imports mlflow, ~1.8 CPU-s of a tiny notebook node's ~3.5, and an emulated
pipeline runs several nodes; a test suite or `orchestrator emulate` runs many. The service itself starts each node
in a fresh container, so this is the emulator's shortcut, not a behaviour of Azure ML: only a command bash would
run as exactly one `python` invocation (no operator, expansion or quoting but single quotes), with the emulator's
own interpreter first on the node's PATH, starts this way; anything else runs with bash as before. The parent
holds no secret: it starts with a bare environment, so not even /proc/<node>/environ (the environment a forked
child inherits in memory) shows this machine's variables.

Off with `EmulatedWorkspace(warm_nodes=False)` or ORCHESTRATOR_EMULATOR_WARM_NODES=0.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Mapping, Protocol

log = logging.getLogger("orchestrator.azureml.emulator")

SWITCH = "ORCHESTRATOR_EMULATOR_WARM_NODES"
SERVER = Path(__file__).resolve().parent / "node_server.py"
_START_TIMEOUT_S = 60.0
# Outside single quotes, any of these makes bash do more than run one program with literal arguments.
_SHELL_SYNTAX = set("$`\"\\|&;<>()*?[]{}~#!\n")


class NodeProcess(Protocol):
    """What the engine needs of a node's process: subprocess.Popen's own names."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def enabled_by_default() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def direct_argv(command: str, env: Mapping[str, str]) -> list[str] | None:
    """The argv bash would run for `command` when that is one `python SCRIPT ...` of this interpreter, else None."""
    quoted = False
    for char in command:
        if char == "'":
            quoted = not quoted
        elif not quoted and char in _SHELL_SYNTAX:
            return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    if len(argv) < 2 or argv[0] != "python" or argv[1].startswith("-"):
        return None
    found = shutil.which("python", path=env.get("PATH", ""))
    if found is None or os.path.realpath(found) != os.path.realpath(sys.executable):
        return None
    return argv


class _Forked:
    """A node forked by the server: Popen's poll/wait/returncode, the exit status reported by its parent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _end(self, returncode: int) -> None:
        self.returncode = returncode
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"node {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class WarmNodes:
    """One warm parent for this process's emulated workspaces, started on first use, stopped by `close`."""

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self._preload = preload  # () is the server's default: what a node's step imports
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None
        self._broken = False
        self._next_id = 0
        self._waiting: dict[int, tuple[threading.Event, list[_Forked | str]]] = {}
        self._running: dict[int, _Forked] = {}

    def start(self, argv: list[str], *, cwd: Path, env: Mapping[str, str], log_path: Path) -> NodeProcess | None:
        """The node's process, or None when the warm parent is unavailable (the caller then uses bash)."""
        with self._lock:
            server = self._ensure_server()
            if server is None or server.stdin is None:
                return None
            self._next_id += 1
            request_id = self._next_id
            answer: list[_Forked | str] = []
            forked = threading.Event()
            self._waiting[request_id] = (forked, answer)
            request = {"id": request_id, "argv": argv, "program": shutil.which(argv[0], path=env.get("PATH", "")) or argv[0],
                       "cwd": str(cwd), "env": dict(env), "log": str(log_path)}
            try:
                server.stdin.write((json.dumps(request) + "\n").encode())
                server.stdin.flush()
            except OSError:
                self._waiting.pop(request_id, None)
                self._broken = True
                return None
        if not forked.wait(_START_TIMEOUT_S):
            with self._lock:
                if self._waiting.pop(request_id, None) is not None:  # still unanswered: a late fork is killed
                    log.warning("warm node start timed out; running the node with bash")
                    return None
        if not answer or isinstance(answer[0], str):
            log.warning("warm node start failed (%s); running the node with bash", answer[0] if answer else "no answer")
            return None
        return answer[0]

    def prestart(self) -> None:
        """Start the parent in the background (a job's first nodes are still being staged and checked): its
        imports take about 1.5 s that the first `start` would otherwise wait for. `start` waits on the same lock."""
        def ensure() -> None:
            with self._lock:
                self._ensure_server()

        with self._lock:
            if self._server is not None or self._broken:
                return
        threading.Thread(target=ensure, name="warm-nodes-start", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None and server.stdin is not None:
            server.stdin.close()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()

    def _ensure_server(self) -> subprocess.Popen[bytes] | None:
        if self._server is not None or self._broken:
            return self._server
        # A bare environment: what a forked node inherits in memory must hold nothing of this machine.
        bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": os.environ.get("LANG", "C.UTF-8"),
                "HOME": os.environ.get("HOME", "/")}
        try:
            server = subprocess.Popen([sys.executable, str(SERVER), *self._preload], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env=bare, cwd="/")
        except OSError as exc:
            log.warning("warm node parent not started (%s); nodes run with bash", exc)
            self._broken = True
            return None
        assert server.stdout is not None
        if not _ready(server.stdout):
            server.kill()
            log.warning("warm node parent did not start; nodes run with bash")
            self._broken = True
            return None
        self._server = server
        threading.Thread(target=self._read, args=(server,), name="warm-nodes", daemon=True).start()
        return server

    def _read(self, server: subprocess.Popen[bytes]) -> None:
        assert server.stdout is not None
        for line in server.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # not the server's: only its own JSON lines reach this pipe
                log.warning("warm node parent: unreadable line %r", line[:200])
                continue
            with self._lock:
                if "id" in message:
                    if message["id"] not in self._waiting:  # its caller gave up waiting and ran it with bash
                        if "pid" in message:
                            _kill_session(int(message["pid"]))
                        continue
                    forked, answer = self._waiting.pop(message["id"])
                    if "pid" in message:
                        node = _Forked(int(message["pid"]))
                        self._running[node.pid] = node
                        answer.append(node)
                    else:
                        answer.append(str(message.get("error")))
                    forked.set()
                elif "pid" in message:
                    pid = int(message["pid"])
                    if pid in self._running:
                        self._running.pop(pid)._end(int(message["returncode"]))
        with self._lock:  # the parent is gone: nothing it forked can be waited for any more
            self._broken = self._server is not None
            for node in self._running.values():
                node._end(255)
            self._running.clear()
            for forked, answer in self._waiting.values():
                answer.append("the warm node parent exited")
                forked.set()
            self._waiting.clear()


def _kill_session(pid: int) -> None:
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _ready(stdout: IO[bytes]) -> bool:
    import select

    readable, _, _ = select.select([stdout], [], [], _START_TIMEOUT_S)
    return bool(readable) and json.loads(stdout.readline() or b"{}").get("ready") is True


_shared: WarmNodes | None = None
_shared_lock = threading.Lock()


def shared() -> WarmNodes:
    """The process's warm parent (one per process: starting it costs what it saves on one node)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WarmNodes()
            import atexit

            atexit.register(_shared.close)
        return _shared
