"""The warm parent of forked kernels (steps/_warm.py starts it; docs/step-runner.md, "Warm kernel start").

Run in the kernel's own interpreter, with the kernel's environment (the secret policy already applied, without
the step's own variables), as `PYTHON -c BOOT this-file`. It imports what every ipykernel imports before its
first cell, then serves fork requests, one JSON line each on standard input, and answers on the descriptor that
was its standard output (standard output itself then goes to its log, so nothing an import prints is read as an
answer):

    {"ready": true}                              imports done, nothing else started
    {"id": N, "pid": P} | {"id": N, "error": E}  one kernel forked (P: its outer process) or not
    {"exit": P, "code": C}                       that outer process ended (C: as Popen.returncode)

Each request names a JSON file (in the kernel's private connection folder, removed once read) that only the
forked child reads: the step's environment, working directory, command line, log and status file never pass
through this process. Per kernel, mirroring the cold launch (steps/_isolation.py: unshare --pid --fork
--mount-proc --kill-child, the root setup, setpriv, steps/_pidinit.py):

    this process -> outer (setsid, dies with this process; like `unshare`: waits for the init)
                 -> init (PID 1 of a new PID and mount namespace: fresh /proc, as root /proc/sys and /sys
                          read-only, capabilities dropped; reaps orphans, writes the kernel's exit status)
                 -> kernel (the step's fds, environment, cwd, sys.path, argv; then `python -m ipykernel_launcher`
                            exactly as runpy runs it for `-m`; its exit waits for threads and runs atexit
                            handlers, then skips the module teardown: see _leave)

At fork time this process has one thread, no zmq context, no event loop and has run no user code. When its
standard input closes (the run ended, or the orchestrator died) it kills every kernel it forked and exits.

Standard library only (ctypes, json, select, signal: every ipykernel imports them anyway).
"""

import ctypes
import gc
import importlib
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 1, 24, 47, 4
PR_SET_CHILD_SUBREAPER = 36
_CAPABILITY_VERSION_3 = 0x20080522
_MOUNT_FLAGS = {"ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
                "strictatime": MS_STRICTATIME}
_CAP_NAMES = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
              "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
              "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot",
              "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
              "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend",
              "audit_read", "perfmon", "bpf", "checkpoint_restore")

_libc = ctypes.CDLL(None, use_errno=True)


class _SetupError(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise _SetupError(f"{what}: {os.strerror(error)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), None), f"mount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _keep_only(keep: Sequence[str]) -> None:
    """The capability drop `setpriv --inh-caps=-all --bounding-set=-all,+KEEP` and the exec that follows give: the
    bounding set is KEEP, permitted and effective are KEEP, inheritable and ambient are empty."""
    with open("/proc/sys/kernel/cap_last_cap") as file:
        last = int(file.read())
    mask = 0
    for name in keep:
        mask |= 1 << _CAP_NAMES.index(name)
    for cap in range(last + 1):
        if not mask >> cap & 1:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # EINVAL on kernels without ambient sets
    low, high = mask & 0xFFFFFFFF, mask >> 32
    data = (_CapData * 2)(_CapData(low, low, 0), _CapData(high, high, 0))
    _check(_libc.capset(ctypes.byref(_CapHeader(_CAPABILITY_VERSION_3, 0)), data), "capset")


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _enter_namespaces(root: bool) -> None:
    """In the outer process: new PID and mount namespaces for the next child, and (not root) a user namespace
    that maps only the current user, as `unshare --user --map-current-user`."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWPID | CLONE_NEWNS | (0 if root else CLONE_NEWUSER)), "unshare")
    if not root:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing done below reaches the machine's mounts


def _read_only_system() -> None:
    """As root: /proc/sys and /sys (with what is mounted under /sys/kernel, and /sys/fs/bpf) read-only, keeping each
    mount's other flags (steps/_isolation.py, _ROOT_SETUP)."""
    _mount("/proc/sys", "/proc/sys", None, MS_BIND)
    _mount(None, "/proc/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with open("/proc/self/mountinfo") as file:
        mounts = [line.split() for line in file]
    for fields in mounts:
        point, options = fields[4], fields[5].split(",")
        if point == "/sys" or point.startswith("/sys/kernel/") or point == "/sys/fs/bpf":
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for option in options:
                flags |= _MOUNT_FLAGS.get(option, 0)
            _mount(None, point.replace("\\040", " "), None, flags)


def _init(kernel: int, status_file: str) -> NoReturn:
    """PID 1 of the namespace, as steps/_pidinit.py: reap everything, record how the kernel ended."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        if pid == kernel:
            break
    code = os.waitstatus_to_exitcode(status)
    fd = os.open(status_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, str(code).encode())
    os.close(fd)
    os._exit(code if code >= 0 else 128 - code)


def _outer(request: dict[str, Any], report: int, lifeline: int) -> str:
    """The outer process (as `unshare --fork --kill-child`): builds the namespaces, then waits for their init and
    ends as it does. Returns only in the kernel process, with what the kernel needs; every other process exits."""
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if _lifeline_cut(lifeline):  # this process's parent died before the line above: nothing to serve
        os._exit(1)
    root = os.geteuid() == 0
    _enter_namespaces(root)
    init = os.fork()
    if init:
        os.close(report)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # as unshare: only its child's end counts
            signal.signal(signum, signal.SIG_IGN)
        while True:
            pid, status = os.waitpid(init, 0)
            if pid == init:
                break
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the namespace ends with the outer process
    # --mount-proc: this process is PID 1 of the new namespace; its /proc shows that namespace only.
    _mount("none", "/proc", None, MS_REC | MS_PRIVATE)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV)
    if root:
        _read_only_system()
    _keep_only(request["keep_caps"] if root else ())
    kernel = os.fork()
    if kernel:
        os.write(report, b"ok")
        os.close(report)
        _init(kernel, request["status_file"])
    os.close(report)
    return _become(request)


def _become(request: dict[str, Any]) -> str:
    """In the kernel process: the step's standard streams, environment, working directory, sys.path and argv, as
    `python -m ipykernel_launcher ...` started there would have them."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(stdin, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["JPY_PARENT_PID"] = "1"  # as steps/_pidinit.py sets it: the kernel's parent is the init
    if os.geteuid() == 0:  # the cold root launch runs the kernel through `sh`, which sets these two
        os.environ["PWD"] = os.path.realpath(request["cwd"])
        os.environ["_"] = ""
    for name, value in _IMPORTS_SET.items():  # what the imports below did to the environment, as in a cold start
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.chdir(request["cwd"])
    gc.enable()  # as in every interpreter; the warm parent imported with it off (_warm_up)
    command = request["argv"]  # [python, "-m", module, *arguments]
    sys.path.insert(0, os.getcwd())  # what -m puts first (ipykernel_launcher takes it out again while it loads)
    sys.argv = ["-m", *command[3:]]  # runpy replaces "-m" with the module's file, as for a real -m
    sys.orig_argv = list(command)
    return str(command[2])


def _lifeline_cut(lifeline: int) -> bool:
    readable, _, _ = select.select([lifeline], [], [], 0)
    return bool(readable)


def _serve() -> str:
    """The request loop. Returns (in a forked kernel only) the module to run as __main__."""
    # Orphaned outer processes (there are none: each waits for its init) and this process's own children are
    # reaped here; a wakeup fd turns SIGCHLD into something select() sees.
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    # A pipe whose write end only this process holds: a child sees it readable (EOF) once this process is gone.
    lifeline, lifeline_keep = os.pipe()
    children: set[int] = set()
    pending = b""
    out = _PROTOCOL[0]

    def say(message: dict[str, Any]) -> None:
        os.write(out, (json.dumps(message) + "\n").encode())

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    say({"ready": True, "threads": threading.active_count()})
    while True:
        readable, _, _ = select.select([0, wake_read], [], [])
        if wake_read in readable:
            try:
                while os.read(wake_read, 512):
                    pass
            except BlockingIOError:
                pass
            reap()
        if 0 not in readable:
            continue
        chunk = os.read(0, 65536)
        if not chunk:  # the run is over, or the orchestrator died: nothing of ours may outlive it
            for pid in children:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            message = json.loads(line)
            if threading.active_count() != 1:
                say({"id": message["id"], "error": "the warm parent has started a thread"})
                continue
            report_read, report_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                # The child: nothing of the loop stays (signal set-up, wakeup fd, pipes), then the step's request.
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (wake_read, wake_write, lifeline_keep, report_read, out):
                    os.close(fd)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):  # the orchestrator's pipes and this process's log stay out of every child
                    os.dup2(null, fd)
                os.close(null)
                try:
                    # Read in the child only (module docstring): the step's request never enters this process.
                    with open(message["request"]) as file:
                        request = json.load(file)
                    os.unlink(message["request"])
                    return _outer(request, report_write, lifeline)
                except BaseException as exc:  # noqa: BLE001: told to the orchestrator, then this child ends
                    try:
                        os.write(report_write, f"error: {type(exc).__name__}: {exc}".encode())
                    finally:
                        os._exit(125)
            os.close(report_write)
            said = b""
            while True:
                part = os.read(report_read, 4096)
                if not part:
                    break
                said += part
            os.close(report_read)
            children.add(pid)
            if said == b"ok":
                say({"id": message["id"], "pid": pid})
            else:
                say({"id": message["id"], "pid": pid,
                     "error": said.decode(errors="replace") or "the forked kernel ended during its set-up"})


_IMPORTS_SET: dict[str, str | None] = {}  # variables the warm-up's imports set (debugpy does) or removed (None)


def _warm_up() -> None:
    """What every ipykernel imports before its first cell, and nothing that starts a thread or opens a socket."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]  # -c put the working directory first; a kernel's own is put back in each child
    gc.disable()  # no collection while importing (nor after: this process runs nothing else); kernels enable it
    before = dict(os.environ)
    _import()
    _preload_psutil()
    _IMPORTS_SET.update({name: value for name, value in os.environ.items() if before.get(name) != value})
    _IMPORTS_SET.update({name: None for name in before if name not in os.environ})
    # Every object the imports made is moved out of the garbage collector's reach, in this process and so in every
    # kernel forked from it: a kernel's own set-up triggers a full collection, which writes to the header of every
    # object it visits and so copies nearly every page shared with this process (measured: 6,700 page faults and
    # 0.19 CPU-s per tiny kernel, against 5,000 and 0.09 with the freeze). This is Python's own recipe (its gc
    # documentation: gc.disable() early in the parent, gc.freeze() before fork(), gc.enable() early in the children).
    # A notebook sees gc.get_freeze_count() > 0 (docs/step-runner.md); its own objects are collected as usual, and
    # the frozen ones live as long as their modules anyway.
    gc.freeze()


# Every module here is one a cold ipykernel has loaded when its first cell runs (tests/test_warm_kernels.py compares
# the two lists): ipykernel.debugger is debugpy, a tenth of a second of every kernel's start. By name: they are the
# kernel's imports, part of ipykernel's own dependencies, not this module's (the Azure ML package check reads
# import statements).
WARM_IMPORTS = ("ipykernel.kernelapp", "ipykernel.debugger", "IPython.core.completerlib", "IPython.core.debugger",
                "IPython.core.logger", "IPython.core.oinspect", "IPython.extensions.storemagic",
                "tornado.platform.asyncio", "tornado.queues", "faulthandler", "runpy", "sqlite3")


def _import() -> None:
    for name in WARM_IMPORTS:
        importlib.import_module(name)


def _preload_psutil() -> None:
    """ipykernel imports psutil when it shuts down, to end the kernel's child processes (ipykernel.kernelbase's
    `_get_psutil`): 11 to 14 ms of every kernel's CPU, a tenth of a tiny kernel's. It is imported here for ipykernel
    (whose cache keeps it), then taken out of sys.modules with what it imported: a kernel's modules are still
    exactly a cold kernel's, and a notebook that imports psutil gets a fresh module, as in a cold kernel. Nothing
    happens with an ipykernel that does not have that cache."""
    get_psutil = getattr(sys.modules.get("ipykernel.kernelbase"), "_get_psutil", None)
    if get_psutil is None:
        return
    before = set(sys.modules)
    get_psutil()
    for name in set(sys.modules) - before:
        del sys.modules[name]


_PROTOCOL: list[int] = []  # the descriptor the orchestrator reads; standard output itself goes to the log


def main() -> None:
    _PROTOCOL.append(os.dup(1))
    os.dup2(2, 1)  # whatever an import prints lands in the log, not in the messages
    _warm_up()
    module = _serve()
    # Only a forked kernel gets here: run its module as `python -m` does, then exit as an interpreter does.
    import runpy
    code: object = 0
    try:
        runpy._run_module_as_main(module)  # type: ignore[attr-defined]
    except SystemExit as done:
        code = done.code
    _leave(code)


def _leave(code: object) -> NoReturn:
    """What the interpreter's exit does that a notebook can notice, in its order: wait for non-daemon threads, run
    atexit handlers (IPython's clears the notebook's namespace, so files it left open are flushed and closed),
    flush stdio; then end without tearing down every module. That teardown would touch, and so copy, every page
    this process shares with the warm parent: two thirds of a forked kernel's CPU time, measured."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    import atexit
    atexit._run_exitfuncs()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


if __name__ == "__warm_parent__":
    main()
