"""Warm kernel start: each kernel is forked from a warm parent that has already imported what every ipykernel imports.

Importing ipykernel and IPython is most of a small kernel's start (about 0.3 CPU-s of 0.5). A warm parent
(steps/_zygote.py) pays it once per run and per (interpreter, kernel command line, environment); each kernel is
then a fork of it that builds its own PID and mount namespace, /proc, read-only /proc/sys and /sys and (as root)
capability drop exactly as the cold launch does (steps/_isolation.py), takes the step's environment, working
directory, sys.path and command line, and runs `python -m ipykernel_launcher` as a fresh interpreter would.

The parent is started with the kernel's environment *after* the secret policy (steps/_env_policy.py) and without
the variables that differ per step (`late`: the step's own folders, CUDA_VISIBLE_DEVICES), so its
/proc/<pid>/environ holds nothing a kernel may not see, and nothing that makes one kernel's start differ from
another's. A step's request goes to the forked child through a file in the kernel's private connection folder:
the parent never holds one step's settings when it forks the next.

Only what can be kept exactly is forked; everything else starts cold, as before: kernels that are not run as
`PYTHON -m ipykernel_launcher|ipykernel ...`, machines without PID namespaces (the cold path's marker that finds
stray processes of an unconfined kernel reads /proc/<pid>/environ, which a fork cannot set), a parent that
failed to start, and a forked kernel that did not become ready (its step starts a cold one and reports that).

docs/step-runner.md, "Warm kernel start", describes it for users.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupyter_client.kernelspec import KernelSpec

try:
    from . import _isolation
except ImportError:  # run as a script (steps/run_notebook.py puts this folder on sys.path)
    import _isolation  # type: ignore[no-redef]

ZYGOTE = Path(__file__).with_name("_zygote.py")
# `python -c` so that no file's folder lands on sys.path; the parent's own names stay out of __main__.
_BOOT = ("import sys\npath = sys.argv[1]\nwith open(path, 'rb') as file:\n"
         "    code = compile(file.read(), path, 'exec')\nexec(code, {'__name__': '__warm_parent__'})")
_LAUNCHERS = ("ipykernel_launcher", "ipykernel")
# Variables a forked kernel sets for itself; nothing the parent imports reads them (docs/step-runner.md).
FORK_LATE = ("CUDA_VISIBLE_DEVICES",)
_CLOSE_WAIT_S = 2.0
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)


class WarmParentError(Exception):
    """The warm parent could not fork this kernel (the step starts a cold one)."""


def fork_command(argv: Sequence[str], path: str | None) -> tuple[str, ...] | None:
    """(the resolved interpreter, `-m`, the launcher module) when a kernelspec's argv runs ipykernel as a module of
    a Python interpreter, the only command line a fork reproduces exactly; None otherwise."""
    if len(argv) < 3 or argv[1] != "-m" or argv[2] not in _LAUNCHERS:
        return None
    python: str | None = argv[0]
    if argv[0] in ("python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]):
        python = sys.executable  # as jupyter_client's format_kernel_cmd: "python" means this interpreter
    elif os.sep not in argv[0]:
        python = shutil.which(argv[0], path=path)
    if python is None or not os.access(python, os.X_OK):
        return None
    return (python, "-m", argv[2])


def _absolute_path(pythonpath: str) -> bool:
    """A relative PYTHONPATH entry is resolved against the working directory the interpreter starts in, which
    for a fork is the parent's, not the kernel's."""
    return all(os.path.isabs(part) for part in pythonpath.split(os.pathsep) if pythonpath)


class ForkedProcess:
    """The outer process of a forked kernel, as much of subprocess.Popen as jupyter_client and steps/_kernel.py use.
    Its parent is the warm parent, which reports its end; `returncode` is what Popen's would be."""

    stdin: IO[bytes] | None = None
    stdout: IO[bytes] | None = None
    stderr: IO[bytes] | None = None

    def __init__(self, pid: int, parent: WarmParent) -> None:
        self.pid = pid
        self._parent = parent
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._parent.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._parent.wait_exit(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
        self.returncode = code
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never signal a pid that may have been reused
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(_KILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _kill_late(future: concurrent.futures.Future[int]) -> None:
    """A kernel forked after its step stopped waiting for it (timeout, Ctrl-C): nobody will ever stop it."""
    if not future.cancelled() and future.exception() is None:
        with contextlib.suppress(OSError):
            os.killpg(future.result(), _KILL)


class WarmParent:
    """One warm parent process and the thread that reads what it says."""

    def __init__(self, python: str, env: Mapping[str, str], log_path: Path, cwd: Path) -> None:
        self.log_path = log_path
        self._ids = itertools.count(1)
        self._waiting: dict[int, concurrent.futures.Future[int]] = {}
        self._exits: dict[int, int] = {}
        self._known: set[int] = set()
        self._changed = threading.Condition()
        self._gone = False
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        with open(log_path, "ab") as log:
            # Its own session: a Ctrl-C at the terminal reaches the orchestrator, which ends it in order.
            self.process = subprocess.Popen([python, "-c", _BOOT, str(ZYGOTE)], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, env=dict(env),
                                            cwd=cwd, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="warm-parent", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            self._read_messages()
        finally:
            self._ended()

    def _read_messages(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:  # not ours (the parent's own output goes to its log): never a reason to stop
                continue
            if not isinstance(message, dict):
                continue
            with self._changed:
                if "ready" in message:
                    if not self.ready.done():
                        self.ready.set_result(None)
                elif "exit" in message:
                    self._exits[message["exit"]] = message["code"]
                elif "id" in message and message["id"] in self._waiting:
                    future = self._waiting.pop(message["id"])
                    if "pid" in message:
                        self._known.add(message["pid"])
                    if "error" in message:
                        future.set_exception(WarmParentError(message["error"]))
                    else:
                        future.set_result(message["pid"])
                self._changed.notify_all()

    def _ended(self) -> None:
        with self._changed:  # the parent is gone, and with it (parent-death signal) every kernel it forked
            self._gone = True
            for pid in self._known - set(self._exits):
                self._exits[pid] = -_KILL
            for future in self._waiting.values():
                future.set_exception(WarmParentError(f"the warm parent ended{self._log_tail()}"))
            self._waiting.clear()
            if not self.ready.done():
                self.ready.set_exception(WarmParentError(f"the warm parent did not start{self._log_tail()}"))
            self._changed.notify_all()

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            if lines:
                return f": {lines[-1][:300]}"
        return ""

    async def fork(self, request: Mapping[str, Any], request_file: Path, timeout_s: float) -> ForkedProcess:
        """Fork one kernel; `request` goes to the child only, through `request_file` (a private folder). A parent
        that does not answer within `timeout_s` (the kernel start's own limit) is given up on: the step starts
        cold, and a kernel forked after that is killed at once."""
        descriptor = os.open(request_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(descriptor, "w", encoding="utf-8") as file:
            json.dump(request, file)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        with self._changed:
            if self._gone:
                raise WarmParentError("the warm parent has ended")
            number = next(self._ids)
            self._waiting[number] = future
            assert self.process.stdin is not None
            try:
                self.process.stdin.write((json.dumps({"id": number, "request": str(request_file)}) + "\n").encode())
                self.process.stdin.flush()
            except OSError as exc:
                self._waiting.pop(number, None)
                raise WarmParentError(f"the warm parent is gone: {exc}") from exc
        try:
            pid = await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
        except asyncio.TimeoutError as exc:
            future.add_done_callback(_kill_late)
            raise WarmParentError(f"the warm parent did not fork the kernel within {timeout_s:g} s") from exc
        except asyncio.CancelledError:
            future.add_done_callback(_kill_late)
            raise
        return ForkedProcess(pid, self)

    @property
    def gone(self) -> bool:
        with self._changed:
            return self._gone

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            return self._exits.get(pid)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        """End the parent: it kills every kernel it forked, then exits (SIGKILL if it does not in time)."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, _KILL)
            self.process.wait()
        self._reader.join(_CLOSE_WAIT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass(frozen=True)
class _Key:
    """What a warm parent was started with; a kernel is forked from it only if its own key is equal."""

    command: tuple[str, ...]
    env: frozenset[tuple[str, str]]  # without the late variables
    isolation: _isolation.Isolation


def _parent_key(argv: Sequence[str], env: Mapping[str, str], isolation: _isolation.Isolation,
                late: Collection[str]) -> tuple[_Key, dict[str, str]] | None:
    """(the key, the parent's environment) for a kernel that can be forked; None: it starts cold."""
    if not isolation.confined or not sys.platform.startswith("linux"):
        return None
    command = fork_command(argv, env.get("PATH", os.defpath))
    if command is None or not _absolute_path(env.get("PYTHONPATH", "")):
        return None
    early = {name: value for name, value in env.items() if name not in late and name != "PYTHONEXECUTABLE"}
    return _Key(command, frozenset(early.items()), isolation), early


# Parents started before the run's pool exists (start_early), adopted by the first pool whose kernels match.
_EARLY: dict[_Key, WarmParent] = {}


def start_early(argv: Sequence[str], env: Mapping[str, str], cwd: Path,
                probe: Callable[[], _isolation.Isolation] = _isolation.detect) -> bool:
    """Start the warm parent a run's first kernel will most likely need, before the orchestrator's own imports and
    set-up, so that the parent's imports overlap them. `env` holds no step folder; `cwd` is where the parent runs
    (its kernels set their own; sys.path does not hold it). Ended by the pool that adopts it, or at exit.

    The machine's isolation (`probe`: a confined no-op, a few processes and tens of milliseconds) is probed while
    the parent imports, not before it starts; a parent started on a machine that turns out not to confine kernels,
    which never forks, is ended at once."""
    assumed = _parent_key(argv, env, _isolation.Isolation(_isolation.PID_NAMESPACE), FORK_LATE)
    if assumed is None or any(key.command == assumed[0].command and key.env == assumed[0].env for key in _EARLY):
        return False
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-warm-"))
    try:
        parent = WarmParent(assumed[0].command[0], assumed[1], folder / "warm-parent.log", cwd)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return False
    found = _parent_key(argv, env, probe(), FORK_LATE)
    if found is None:  # no kernel will fork from it: it need not finish its imports
        with contextlib.suppress(OSError):
            os.killpg(parent.process.pid, _KILL)
        _close(parent)
        return False
    _EARLY[found[0]] = parent
    if len(_EARLY) == 1:
        atexit.register(_close_early)
    return True


def _close_early() -> None:
    for parent in _EARLY.values():
        _close(parent)
    _EARLY.clear()


def _close(parent: WarmParent) -> None:
    parent.close()
    with contextlib.suppress(OSError):
        if parent.log_path.stat().st_size == 0:
            parent.log_path.unlink()
    if parent.log_path.parent.name.startswith("orchestrator-warm-"):
        with contextlib.suppress(OSError):
            parent.log_path.parent.rmdir()


class KernelPool:
    """The warm parents of one run, one per key, started on first use and all ended by `close` (the run's end)."""

    def __init__(self, folder: Path, late: Collection[str], *, limit: int = 4) -> None:
        # Parents' logs live in `folder` (in the run folder): what a parent that failed to start said.
        self.folder = folder
        self.late = frozenset(late) | frozenset(FORK_LATE)
        self.limit = limit
        self._parents: dict[_Key, WarmParent] = dict(_EARLY)  # adopted: they end with this run
        _EARLY.clear()
        self._closed = False
        self.forked = 0  # kernels forked, and parents started: for the bench and tests
        self.started = 0

    def parent_for(self, spec: KernelSpec, env: Mapping[str, str], isolation: _isolation.Isolation,
                   cwd: Path) -> WarmParent | None:
        """The warm parent to fork this kernel from (started now if needed), or None: start it cold."""
        found = None if self._closed else _parent_key(spec.argv, env, isolation, self.late)
        if found is None:
            return None
        key, early = found
        parent = self._parents.get(key)
        if parent is None:
            if len(self._parents) >= self.limit:
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                log = self.folder / f"warm-parent-{len(self._parents) + 1}.log"
                parent = WarmParent(key.command[0], early, log, cwd)
            except OSError:
                return None
            self._parents[key] = parent
            self.started += 1
        if parent.gone or (parent.ready.done() and parent.ready.exception() is not None):
            return None  # it died (its kernels with it) or never started: this run's later kernels start cold
        return parent

    def close(self) -> None:
        """End every warm parent and the kernels it forked (also on Ctrl-C: the run's end leaves no process)."""
        self._closed = True
        parents = list(self._parents.values())
        self._parents.clear()
        for parent in parents:
            _close(parent)
        with contextlib.suppress(OSError):
            self.folder.rmdir()

