"""The warm parent of emulated nodes (warm_nodes.py): run as a script, never imported by the orchestrator.

It imports the modules named on its command line (by default what every node's step imports at great cost: mlflow,
~1.8 CPU-s per process, more than the rest of a tiny notebook's node together), runs no node code itself, and forks
one child per node. Each child becomes what `python SCRIPT ARGS...` started by bash in the node's folder would be:
its own session, working directory, environment (exactly the node's: nothing of this process's), sys.argv, sys.path
(the script's folder, then PYTHONPATH, then the interpreter's), a `sitecustomize` found on PYTHONPATH, its output
appended to the node's log; then the script runs as `__main__` and the child exits with the code Python would have.

The protocol is one JSON object per line. In (stdin): {"id", "argv", "program", "cwd", "env", "log"}. Out (stdout):
{"id", "pid"} once the child is forked (or {"id", "error"}), then {"pid", "returncode"} when it ends, the
returncode as subprocess reports it (negative: killed by that signal). End of input ends the server; the
children, in sessions of their own, are stopped by the emulator as any node is.

Standard library only, and nothing of the orchestrator: a node must import the orchestrator's code from its
own snapshot, as it does on Azure ML.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
from typing import Any

PRELOAD = ("mlflow", "mlflow.tracking", "mlflow.entities")
_BASE_PATH = list(sys.path[1:])  # the interpreter's own; sys.path[0] is this file's folder


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _exit_code(value: object) -> int:
    """What Python exits with for `raise SystemExit(value)`."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _as_bash_leaves_it(env: dict[str, str], cwd: str, program: str) -> dict[str, str]:
    """The environment `bash -c 'python ...'` hands Python: bash exports PWD, SHLVL (back to its old value as it
    execs its last command) and `_` (the program's path); Python then coerces a C locale to C.UTF-8 (PEP 538)."""
    env = {**env, "PWD": cwd, "SHLVL": str(int(env.get("SHLVL") or 0)), "_": program}
    effective = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "C"
    if effective in ("C", "POSIX") and not env.get("LC_ALL") and env.get("PYTHONCOERCECLOCALE") != "0":
        env["LC_CTYPE"] = "C.UTF-8"
    return env


def _run_as_main(script: str) -> int:
    """Run `script` as `python script` runs it: a fresh __main__ with an absolute __file__; the exit code Python
    gives; an uncaught exception printed by sys.excepthook without this file's frame."""
    import types
    from importlib.machinery import SourceFileLoader

    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": script, "__builtins__": __builtins__, "__cached__": None,
                          "__loader__": SourceFileLoader("__main__", script)})
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as source:
            code = compile(source.read(), script, "exec")
        exec(code, main.__dict__)
        return 0
    except SystemExit as stop:
        return _exit_code(stop.code)
    except BaseException as error:
        shown = error.with_traceback(error.__traceback__.tb_next if error.__traceback__ else None)
        sys.excepthook(type(shown), shown, shown.__traceback__)
        return 1


def _become_node(request: dict[str, Any]) -> None:
    """In the forked child: set up as the node's own `python` process would be, run the script, never return."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 4096)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(_as_bash_leaves_it(request["env"], os.getcwd(), request["program"]))
        import tempfile

        tempfile.tempdir = None  # read TMPDIR again, as a new process would
        argv = list(request["argv"])
        script = os.path.abspath(argv[1])
        pythonpath = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        sys.argv = argv[1:]
        sys.path[:] = [os.path.dirname(script), *pythonpath, *_BASE_PATH]
        import atexit

        atexit._clear()  # this server's exit functions are not the node's
        if pythonpath:
            sys.modules.pop("sitecustomize", None)
            try:
                importlib.import_module("sitecustomize")  # what site.py does at a new interpreter's start
            except ImportError:
                pass
        code = _run_as_main(script)
        atexit._run_exitfuncs()
        if "logging" in sys.modules:
            sys.modules["logging"].shutdown()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _fork(request: dict[str, Any]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        _send({"id": request["id"], "error": str(exc)})
        return
    if pid == 0:
        _become_node(request)
    _send({"id": request["id"], "pid": pid})


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def serve(preload: list[str]) -> None:
    for module in preload:
        importlib.import_module(module)
    _send({"ready": True})
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                _fork(json.loads(line))
        _reap()


if __name__ == "__main__":
    serve(sys.argv[1:] or list(PRELOAD))
