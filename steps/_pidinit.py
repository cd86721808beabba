"""PID 1 of one kernel's PID namespace (steps/_isolation.py): starts the kernel as its only child, reaps every
process orphaned inside the namespace, and records exactly how the kernel ended.

Run as `python -I -S _pidinit.py STATUS_FILE -- KERNEL ARGV...`, standard library only, so that it starts in
milliseconds. Why not let the kernel itself be PID 1: Linux protects a namespace's init from signals sent inside
the namespace, so a notebook's own `os.kill(os.getpid(), SIGKILL)` or `abort()` would no longer end its kernel,
and init's exit status cannot say "killed by SIGSEGV" (only 128+11, which an `os._exit(139)` also gives). The
status file keeps the kernel's true status for the crash classification; when this process ends, the kernel
ends the namespace and every process the notebook started with it.
"""

import os  # os and sys only, both already loaded at interpreter start: each import here costs every kernel
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        os.write(2, b"usage: _pidinit.py STATUS_FILE -- COMMAND...\n")
        return 2
    status_file, command = argv[1], argv[3:]
    # ipykernel watches JPY_PARENT_PID and exits when its parent becomes PID 1; here its parent IS PID 1, and
    # the namespace already ends the kernel when the orchestrator goes (unshare --kill-child). "1" turns the
    # watch off (ipykernel kernelapp.init_poller).
    os.environ["JPY_PARENT_PID"] = "1"
    kernel = os.fork()
    if kernel == 0:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"cannot start {command[0]}: {exc}\n".encode())
        os._exit(127)
    while True:
        try:
            pid, status = os.wait()  # every orphan of the namespace is re-parented here: reap them all
        except ChildProcessError:  # cannot happen while the kernel is unreaped; be safe anyway
            return 1
        if pid == kernel:
            break
    code = os.waitstatus_to_exitcode(status)  # -N when killed by signal N
    fd = os.open(status_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, str(code).encode())
    os.close(fd)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
