"""One local kernel for one step: its environment, start, and a stop that leaves no process behind.

Why not nbclient's `async_setup_kernel`: it installs SIGINT/SIGTERM handlers on the event loop and removes
them when the notebook ends, which would remove the local backend's own handlers while other steps still run
in the same loop; it also registers an atexit hook per notebook. Starting the kernel here keeps `run_step`
free of process-wide side effects, so many steps can run concurrently in one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from queue import Empty
from typing import Any

import zmq.asyncio

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner

try:
    from . import _env_policy, _isolation, _warm
except ImportError:  # run as a script (steps/run_notebook.py puts this folder on sys.path)
    import _env_policy  # type: ignore[no-redef]
    import _isolation  # type: ignore[no-redef]
    import _warm  # type: ignore[no-redef]

kernel_environment = _env_policy.kernel_environment  # the rule lives with the secret policy it ends with

# An in-memory IPython history: concurrent kernels otherwise contend for one sqlite file (the same default
# nbclient uses, `NotebookClient.ipython_hist_file`).
IPYKERNEL_ARGUMENTS = ("--HistoryManager.hist_file=:memory:",)

_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL
_EXIT_POLL_S = 0.02
_REAP_WAIT_S = 2.0

FORKED_LINE = "forked from a warm parent"
FOLDER_PREFIX = "nbk-"
_LOCK_FILE = "owner.lock"
_UNLOCKED_GRACE_S = 60.0

_shared_context: zmq.asyncio.Context | None = None
_swept = False


class KernelStartError(Exception):
    """The kernel process did not start or never answered."""


def find_kernelspec(name: str, specs: KernelSpecManager | None = None) -> KernelSpec | None:
    """The installed kernelspec called `name`, or None. Looked up now (JUPYTER_PATH may change), unless `specs`
    is a run's RunKernelSpecs."""
    if not name:
        return None
    try:
        return (specs or KernelSpecManager()).get_kernel_spec(name)
    except (NoSuchKernel, OSError, ValueError):
        return None


class RunKernelSpecs(KernelSpecManager):
    """jupyter_client's kernelspec lookup with each name looked up once: one per run, so that a run sees the kernels
    installed when it started. Each lookup computes again the folders jupyter_client searches (the local backend
    passes them as `kernel_dirs`, found without importing IPython: orchestrator/backends/kernel_dirs.py): a few
    milliseconds, twice per step (the runner's choice of kernel and the kernel manager's own), saved for every step
    after the first."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._looked_up: dict[str, KernelSpec | Exception] = {}

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        if kernel_name not in self._looked_up:
            try:
                self._looked_up[kernel_name] = super().get_kernel_spec(kernel_name)
            except (NoSuchKernel, OSError, ValueError) as exc:
                self._looked_up[kernel_name] = exc
        found = self._looked_up[kernel_name]
        if isinstance(found, Exception):
            raise found
        return found


def installed_kernels() -> list[str]:
    try:
        return sorted(KernelSpecManager().find_kernel_specs())
    except OSError:
        return []


def is_ipykernel(spec: KernelSpec) -> bool:
    """Kernels whose argv runs ipykernel, whatever the spec is called (conda envs name theirs freely)."""
    return any("ipykernel" in part for part in spec.argv)


def _context() -> zmq.asyncio.Context:
    # One zmq context for every kernel and client of this process (jupyter_client otherwise creates one per
    # manager and one per client): each costs an I/O thread, and destroying it blocks the event loop for up
    # to its linger time while other steps wait.
    global _shared_context
    if _shared_context is None or _shared_context.closed:
        _shared_context = zmq.asyncio.Context()
        # The client connects before the kernel has bound its sockets, and zmq retries every 100 ms by
        # default: polling every 10 ms instead took ~0.1 s off every kernel start when two kernels start at
        # once (measured with 40 tiny notebooks, 2 at a time, on 2 cores).
        _shared_context.setsockopt(zmq.RECONNECT_IVL, 10)
    return _shared_context


class ForkProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, launching by a fork of a warm parent instead of Popen: the documented
    plug-in point (`jupyter_client.provisioning`), so the manager, clients and shutdown work as for any kernel."""

    warm: _warm.WarmParent | None = None
    fork_request: dict[str, Any] = {}
    request_file: Path | None = None
    timeout_s = 60.0  # the kernel start's limit (LocalKernel.start sets it)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        assert self.warm is not None and self.request_file is not None
        request = {**self.fork_request, "argv": cmd, "env": dict(kwargs["env"]), "cwd": str(kwargs["cwd"])}
        forked = await self.warm.fork(request, self.request_file, self.timeout_s)
        self.process = forked  # type: ignore[assignment]  # the subset of Popen that jupyter_client uses
        self.pid = self.pgid = forked.pid  # the outer process leads its own session, as Popen's would
        self.cwd = kwargs["cwd"]
        return self.connection_info


class _ConfinedKernelManager(AsyncKernelManager):
    """jupyter_client's manager, with the kernel's command line put inside its confinement: the one place
    where the launch differs from jupyter_client's (its provisioner calls `format_kernel_cmd`)."""

    confinement: _isolation.Confinement | None = None
    search_path: str | None = None  # the kernel environment's PATH, where Popen would look for the program

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command = super().format_kernel_cmd(extra_arguments)
        if self.confinement is None or isinstance(self.provisioner, ForkProvisioner):
            return command  # a forked kernel confines itself (steps/_zygote.py)
        return self.confinement.command(command, self.search_path)


class LocalKernel:
    """A kernel process started in its own session (jupyter_client does that on POSIX) and, where the machine
    allows, its own PID namespace (steps/_isolation.py), so that its whole process tree can be found and
    killed: the process group, plus descendants that started a session of their own."""

    def __init__(self, spec_name: str, spec: KernelSpec, *, cwd: Path, env: dict[str, str], log_path: Path,
                 isolation: _isolation.Isolation | None = None, withheld: Sequence[str] = (),
                 warm: _warm.WarmParent | None = None, specs: KernelSpecManager | None = None):
        self.spec_name = spec_name
        self.withheld = list(withheld)  # names only: what the secret policy kept from this kernel
        self.spec = spec
        self.cwd = cwd
        self.log_path = log_path
        # Short private folder for the connection file and ipc sockets: Unix socket paths are limited to
        # about 100 characters, and a private name means no two kernels ever race for the same address
        # (with tcp, ports are picked before they are bound: papermill #511, jupyter_client #154).
        self._folder, self._lock = _connection_folder()
        self.confinement = _isolation.Confinement(isolation or _isolation.detect(), self._folder)
        self.env = self.confinement.environment(env)
        options: dict[str, Any] = {}
        if is_ipykernel(spec) and os.name == "posix":
            options = {"transport": "ipc", "ip": str(self._folder / "k")}
        if specs is not None:  # the run's lookups (RunKernelSpecs): the manager finds the same spec, at no cost
            options["kernel_spec_manager"] = specs
        self.km = _ConfinedKernelManager(
            kernel_name=spec_name,
            context=_context(),
            connection_file=str(self._folder / "kernel.json"),
            **options,
        )
        self.km.confinement = self.confinement
        self.km.search_path = self.env.get("PATH", os.defpath)
        self.warm = warm
        if warm is not None:  # jupyter_client uses a provisioner that is already set (manager.pre_start_kernel)
            self.km.kernel_id = str(uuid.uuid4())
            provisioner = ForkProvisioner(kernel_id=self.km.kernel_id, kernel_spec=self.km.kernel_spec,
                                                parent=self.km)
            provisioner.warm = warm
            provisioner.request_file = self._folder / "fork-request.json"
            provisioner.fork_request = {"status_file": str(self._folder / _isolation.STATUS_FILE),
                                        "log": str(log_path), "keep_caps": list(_isolation.ROOT_KERNEL_CAPS)}
            self.km.provisioner = provisioner
        self._process: subprocess.Popen[bytes] | None = None
        self.client: Any = None  # AsyncKernelClient once started
        self.info: dict[str, Any] = {}  # the kernel_info reply's content once started

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        # The provisioner holds the Popen as soon as it is launched, even while start() is still waiting for
        # the kernel to answer: a cancellation at that moment must still find the process to kill.
        if self._process is None:
            self._process = getattr(self.km.provisioner, "process", None)
        return self._process

    async def start(self, timeout_s: float) -> None:
        """Start the process and wait until it answers kernel_info; KernelStartError otherwise."""
        extra = list(IPYKERNEL_ARGUMENTS) if is_ipykernel(self.spec) else []
        if isinstance(self.km.provisioner, ForkProvisioner):
            self.km.provisioner.timeout_s = timeout_s
        try:
            with open(self.log_path, "ab") as log:
                # The kernel's own stdout/stderr (C libraries, crashes) go to kernel.log, not to the
                # terminal of whoever runs many steps at once. Appended: a retry keeps the earlier attempt's.
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                log.write(f"--- {stamp} starting kernel {self.spec_name!r} in {self.cwd}\n".encode())
                log.write(f"--- {self.confinement.isolation.describe()}\n".encode())
                if self.warm is not None:
                    log.write(f"--- {FORKED_LINE} (pid {self.warm.process.pid}; docs/step-runner.md)\n".encode())
                if self.withheld:
                    log.write(f"--- environment withheld (docs/isolation.md): {', '.join(self.withheld)}\n".encode())
                log.flush()
                await self.km.start_kernel(
                    extra_arguments=extra,
                    env=self.env,
                    cwd=str(self.cwd),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
        except Exception as exc:  # Popen errors, bad kernelspec argv, provisioner errors
            raise KernelStartError(f"could not start kernel {self.spec_name!r}: {_describe(exc)}") from exc
        self.client = self.km.client(context=_context())
        # Only what the runner uses: nbclient's requests and their outputs. No stdin (input() is refused, as
        # allow_stdin is off), no control (shutdown goes to the shell channel: _request_shutdown), and no heartbeat,
        # a thread per kernel pinging it every second: whether the kernel lives is its process's state (km.is_alive).
        self.client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        try:
            self.info = await self._wait_ready(timeout_s)
        except Exception as exc:  # RuntimeError: died before replying, or no reply in time
            raise KernelStartError(
                f"kernel {self.spec_name!r} did not start: {_describe(exc)}{self._exit_suffix()}"
            ) from exc
        self.client.allow_stdin = False

    async def _wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """The kernel_info reply's content, once shell and IOPub both work.

        jupyter_client's wait_for_ready does the same, then "flushes" IOPub by waiting until it has been
        quiet for 0.2 s: a fixed 0.2 s on every kernel start, near half the start time of a small kernel.
        Draining only what has already arrived is enough, since nbclient ignores IOPub messages that answer
        other requests.
        """
        client = self.client
        deadline = time.monotonic() + timeout_s
        while True:
            client.kernel_info()
            try:
                reply = await client.shell_channel.get_msg(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:
                    # Any IOPub message (ipykernel sends iopub_welcome on subscription) proves the subscription
                    # is live, so the first cell's output cannot be lost to zmq's slow-joiner effect.
                    await client.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass
                else:
                    break
            if not await client.is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout_s:g} seconds")
        handle = getattr(client, "_handle_kernel_info_reply", None)
        if handle is not None:  # adapts the client to the kernel's protocol version
            handle(reply)
        while True:
            try:
                await client.iopub_channel.get_msg(timeout=0)
            except Empty:
                break
        content: dict[str, Any] = reply["content"]
        return content

    def returncode(self) -> int | None:
        """The kernel's own exit status (negative: the signal that killed it), None while it runs."""
        return self.confinement.returncode(self.process.poll() if self.process is not None else None)

    def exit_description(self) -> str:
        """'exit code 1', 'killed by SIGSEGV', or 'still running'."""
        code = self.returncode()
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


    def _exit_suffix(self) -> str:
        description = self.exit_description()
        return "" if description == "still running" else f" (kernel process: {description})"

    def kill_now(self) -> None:
        """SIGKILL the kernel and everything it started, synchronously (safe in a cancellation path)."""
        process = self.process
        if process is not None:
            kill_tree(process, self._descendants(process.pid))
        self.confinement.kill_strays()

    def _descendants(self, pid: int) -> list[int]:
        """What kill_tree must kill besides the process group. Nothing for a confined kernel: all it started is in
        its PID namespace, which ends with its init (which ends with the launched process). Listing them means
        reading every process of the machine, about 5 ms of CPU per kernel on a busy one."""
        return [] if self.confinement.isolation.confined else descendants(pid)

    async def stop(self, grace_s: float = 0.0) -> None:
        """End the kernel and its whole process tree, then release sockets and files.

        With grace_s > 0 the kernel is asked to shut down first (its atexit handlers run). 0 kills at once:
        every output has arrived by now, and a graceful shutdown costs a tenth of a second of CPU per kernel,
        which is most of the orchestrator's overhead on small notebooks.
        """
        process = self.process
        try:
            if process is not None:
                # Descendants must be listed while the kernel is alive: once it exits they are re-parented
                # and can no longer be found from its pid.
                orphans = self._descendants(process.pid)
                if grace_s > 0 and process.poll() is None:
                    with contextlib.suppress(Exception):
                        await self._request_shutdown()
                    await _wait_exit(process, grace_s)
                kill_tree(process, orphans)
                await _wait_exit(process, _REAP_WAIT_S)
            self.confinement.kill_strays()
        finally:
            await self._release()

    async def _request_shutdown(self) -> None:
        """Ask the kernel to exit by itself. An ipykernel is asked on the shell channel, which it serves on its main
        thread: asked on the control channel (jupyter_client's way), its control thread handles the request, then
        flushes stdout on the IOPub thread, which the main thread may already have stopped on its way out (the
        request also stops its event loop): the control thread then waits for ipykernel's 10 s flush timeout, the
        main thread waits for it, and the step for its whole shutdown grace before the kernel is killed. That
        happened to about one tiny notebook in ten (docs/step-runner.md, "Measured"). On the shell channel the
        flush runs on the main thread, before it stops anything. ipykernel serves shutdown_request on both
        channels; other kernels are asked on control, as the messaging protocol says."""
        if self.client is not None and is_ipykernel(self.spec):
            self.client.shell_channel.send(self.client.session.msg("shutdown_request", {"restart": False}))
        else:
            await self.km.request_shutdown()

    async def _release(self) -> None:
        if self.client is not None:
            # Not client.stop_channels(), which would first create the channels that were never started.
            for channel in (self.client.shell_channel, self.client.iopub_channel):
                with contextlib.suppress(Exception):
                    channel.stop()
        with contextlib.suppress(Exception):
            if self.km.has_kernel and self.process is not None and self.process.poll() is not None:
                await self.km.provisioner.wait()  # type: ignore[union-attr]  # reaps, closes its pipes
        with contextlib.suppress(Exception):
            await self.km.cleanup_resources()
        shutil.rmtree(self._folder, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _connection_folder() -> tuple[Path, int | None]:
    """A new private folder for one kernel's connection file and sockets, locked while this process uses it.

    The lock (flock, dropped by the operating system however the process ends) is how a later run tells a
    folder left behind by a SIGKILLed orchestrator, whose kernel.json still holds the kernel's HMAC key, from
    one in use; the first kernel of each process removes the stale ones.
    """
    global _swept
    if not _swept:
        _swept = True
        remove_stale_folders(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
    if fcntl is None:
        return folder, None
    # Locked under another name, then renamed: a sweep of another process never sees an unlocked lock file.
    claiming = folder / f"{_LOCK_FILE}.new"
    lock = os.open(claiming, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(claiming, folder / _LOCK_FILE)
    return folder, lock


def remove_stale_folders(parent: Path) -> list[Path]:
    """Remove this user's kernel connection folders under `parent` that no living process holds."""
    if fcntl is None:  # no way to tell a live folder from a stale one
        return []
    removed = []
    for folder in parent.glob(f"{FOLDER_PREFIX}*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            lock: int | None = os.open(folder / _LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # Left by a version without locks, or just created by a process that has not locked it yet.
            if time.time() - info.st_mtime < _UNLOCKED_GRACE_S:
                continue
            lock = None
        except OSError:
            continue
        try:
            if lock is not None:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # held: a kernel of a running process
                    continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            if lock is not None:
                os.close(lock)
    return removed


async def _wait_exit(process: subprocess.Popen[bytes], limit_s: float) -> None:
    # Polls from 1 ms up: a killed kernel is gone within a few ms, and the next notebook waits for its slot.
    deadline = time.monotonic() + limit_s
    pause = 0.001
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(pause)
        pause = min(pause * 2, _EXIT_POLL_S)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, found through the parent links (psutil when present, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _proc_descendants(pid)
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _proc_descendants(pid: int) -> list[int]:
    if not sys.platform.startswith("linux"):
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may itself contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def kill_tree(process: subprocess.Popen[bytes], others: Iterable[int] = ()) -> None:
    """SIGKILL the kernel, its process group (it leads its own session) and the `others` found earlier."""
    with contextlib.suppress(OSError):
        process.kill()  # a no-op once the process has been reaped, so never hits a recycled pid
    if os.name == "posix":
        with contextlib.suppress(OSError):
            os.killpg(process.pid, _KILL)
    for pid in others:
        with contextlib.suppress(OSError):
            os.kill(pid, _KILL)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
