"""How a kernel process is confined, so that a notebook cannot see the processes around it.

On Linux each kernel, with everything it starts, runs in a PID namespace of its own with its own /proc
(util-linux `unshare --pid --fork --mount-proc --kill-child`): no ancestor's environment, command line, memory or
open files can be named, and when the kernel (or the orchestrator) ends, the namespace ends with every process the
notebook started, double-forked daemons included. PID 1 of the namespace is steps/_pidinit.py, which records
the kernel's own exit status, so crash classification sees "killed by SIGSEGV", not the wrapper's status.

- As root (CI containers), before the kernel starts: /proc/sys and /sys (with the tracing, debug, security and
  BPF file systems mounted under it) become read-only in the kernel's private mount namespace, and the kernel
  keeps only the capabilities of a default Docker container (util-linux `setpriv`). A root kernel could
  otherwise unmount its private /proc and find the machine's underneath (CAP_SYS_ADMIN), set
  /proc/sys/kernel/core_pattern to a program the kernel then runs as root outside every namespace (uid 0 alone
  is enough to write a sysctl), or read other processes' memory through BPF, perf or kernel modules.
- Otherwise through a user namespace mapping the current user (`--user --map-current-user`): the kernel keeps
  its uid and holds no capability, so it cannot unmount /proc either.
- Where neither works (no util-linux, user namespaces disabled, macOS, Windows) kernels run unconfined: the log
  says so once, results.json records it, and `isolation: required` in the plan (or
  ORCHESTRATOR_REQUIRE_ISOLATION=1) refuses to run instead. Unconfined kernels get a marker in their environment
  and every process still carrying it is killed when the step ends (a daemon that left the kernel's process
  tree and session is found that way).

docs/isolation.md describes the policy for users.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PID_NAMESPACE = "pid_namespace"
NONE = "none"
REQUIRE_ENV = "ORCHESTRATOR_REQUIRE_ISOLATION"  # "1": refuse to start a kernel that cannot be confined
MARKER_ENV = "ORCHESTRATOR_KERNEL_MARK"  # set in an unconfined kernel's environment, to find its strays
INIT = Path(__file__).with_name("_pidinit.py")
STATUS_FILE = "exit-status"
_PROBE_TIMEOUT_S = 10.0
# What a root kernel keeps: Docker's default capability set less MKNOD (docs/isolation.md). No SYS_ADMIN (mounts),
# SYS_MODULE, SYS_RAWIO, SYS_PTRACE, BPF, PERFMON or SYSLOG: each is a way to other processes' memory or out.
ROOT_KERNEL_CAPS = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap", "setfcap",
                    "net_bind_service", "net_raw", "sys_chroot", "audit_write")
# Run by `sh` as root inside the new mount namespace (private: nothing here reaches the machine's mounts), before
# the capabilities go. Read-only because uid 0 may write a root-owned sysctl or sysfs file without any
# capability, and core_pattern, uevent_helper or a tracefs probe would run code or read memory outside.
# $1 is `mount` by its full path: the kernel's PATH is the notebook's business and may not hold it.
_ROOT_SETUP = ("mount=$1; shift\n"
               "\"$mount\" -n -o bind,ro /proc/sys /proc/sys || exit 125\n"
               "while read -r _ _ _ _ point _; do\n"
               "  case $point in /sys|/sys/kernel/*|/sys/fs/bpf)\n"
               "    \"$mount\" -n -o remount,bind,ro \"$point\" || exit 125;;\n"
               "  esac\n"
               "done < /proc/self/mountinfo\n"
               "exec \"$@\"")
_KILL = getattr(signal, "SIGKILL", signal.SIGTERM)


class IsolationUnavailable(Exception):
    """Isolation was required and this machine cannot provide it."""


@dataclass(frozen=True)
class Isolation:
    """What this machine can do for every kernel: `wrapper` goes before the init's command line."""

    mode: str  # PID_NAMESPACE | NONE
    wrapper: tuple[str, ...] = ()
    reason: str = ""  # why NONE

    @property
    def confined(self) -> bool:
        return self.mode == PID_NAMESPACE

    def describe(self) -> str:
        if self.confined:
            return "each kernel in its own PID namespace with its own /proc"
        return f"kernels are NOT isolated from the processes around them ({self.reason})"

    def to_json(self) -> dict[str, str]:
        return {"mode": self.mode, **({"reason": self.reason} if self.reason else {})}


def required_by_environment(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(REQUIRE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no")


@functools.lru_cache(maxsize=1)
def detect() -> Isolation:
    """What this machine allows, probed once per process (a real `unshare` of a no-op, a few milliseconds).
    Silent: whoever runs the kernels says it once, where its user reads (a run's progress, the step runner's
    log); every kernel.log says it too."""
    return _probe()


def choose(required: bool) -> Isolation:
    """The isolation for the next kernel; IsolationUnavailable if it is required and impossible here."""
    found = detect()
    if not found.confined and (required or required_by_environment()):
        raise IsolationUnavailable(
            f"kernel isolation is required but unavailable on this machine: {found.reason}")
    return found


def _probe() -> Isolation:
    if not sys.platform.startswith("linux"):
        return Isolation(NONE, reason=f"PID namespaces exist only on Linux, not {sys.platform}")
    unshare = shutil.which("unshare")
    if unshare is None:
        return Isolation(NONE, reason="util-linux `unshare` is not installed")
    wrapper: tuple[str, ...]
    namespace = (unshare, "--pid", "--fork", "--mount-proc", "--kill-child")
    if os.geteuid() == 0:
        tools = {name: shutil.which(name) for name in ("sh", "mount", "setpriv")}
        missing = [f"`{name}`" for name, found in tools.items() if found is None]
        if missing:
            return Isolation(NONE, reason=f"running as root without {', '.join(missing)}, needed to keep a root "
                                          "kernel inside its namespace")
        caps = ",".join(f"+{cap}" for cap in ROOT_KERNEL_CAPS)
        wrapper = (*namespace, "--", str(tools["sh"]), "-c", _ROOT_SETUP, "sh", str(tools["mount"]),
                   str(tools["setpriv"]), "--inh-caps=-all", f"--bounding-set=-all,{caps}", "--")
    else:
        wrapper = (namespace[0], "--user", "--map-current-user", *namespace[1:], "--")
    probe = [*wrapper, sys.executable, "-I", "-S", "-c", ""]
    try:
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=_PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(NONE, reason=f"`unshare` could not run: {exc}")
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return Isolation(NONE, reason=f"`unshare` refused ({said[-1] if said else f'exit code {done.returncode}'})")
    return Isolation(PID_NAMESPACE, wrapper=wrapper)


class Confinement:
    """The confinement of one kernel: its command line, its true exit status, and its strays.

    This is the launch seam: whatever starts a kernel process goes through `environment` and reads the kernel's
    end through `returncode`; a fresh exec goes through `command` too, while a fork of a warm parent builds the
    same confinement itself (steps/_zygote.py) and writes the same status file.
    """

    def __init__(self, isolation: Isolation, folder: Path) -> None:
        self.isolation = isolation
        self._status_file = folder / STATUS_FILE
        self._marker = "" if isolation.confined else secrets.token_hex(8)

    def command(self, argv: Sequence[str], search_path: str | None = None) -> list[str]:
        """`argv` inside the confinement. A program that cannot be executed raises as Popen would have, before
        anything starts: inside, only the init would find out, and the kernel would merely "die at start"."""
        if not self.isolation.confined:
            return list(argv)
        _check_executable(argv[0], search_path)
        return [*self.isolation.wrapper, sys.executable, "-I", "-S", str(INIT), str(self._status_file), "--",
                *argv]

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        return {**env, MARKER_ENV: self._marker} if self._marker else dict(env)

    def returncode(self, wrapper_code: int | None) -> int | None:
        """The kernel's own exit status (negative: killed by that signal) once the launched process ended."""
        if wrapper_code is None or not self.isolation.confined:
            return wrapper_code
        try:
            return int(self._status_file.read_text(encoding="ascii"))
        except (OSError, ValueError):  # the init itself was killed (by us, at a stop): its status is the truth
            return wrapper_code

    def kill_strays(self) -> None:
        """SIGKILL every process still carrying this kernel's marker (only unconfined kernels have one)."""
        for pid in marked_processes(MARKER_ENV, self._marker) if self._marker else []:
            with contextlib.suppress(OSError):
                os.kill(pid, _KILL)


def _check_executable(program: str, search_path: str | None) -> None:
    found = program if os.sep in program else shutil.which(program, mode=os.F_OK, path=search_path)
    if found is None or not os.path.exists(found):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if os.path.isdir(found) or not os.access(found, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)


def marked_processes(name: str, value: str) -> list[int]:
    """Processes of this user whose environment holds name=value (Linux /proc; elsewhere none can be found)."""
    if not sys.platform.startswith("linux"):
        return []
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.append(int(entry))
    return found
