"""Where a run's files live (docs/architecture.md#run-folder): creating run folders, their ids, and finding the pieces in one.

Every run folder holds a marker, `.orchestrator-run`, which is also its lock:
- the marker says "this tool wrote this folder", so `--out` reuses (and empties) only such folders, never a
  project folder that merely holds a file called results.json;
- the running process holds an exclusive flock on it for as long as it writes the folder. A second run into
  the same folder is refused (exit 2) naming the holder, which the marker records (pid, host, start time).
  The kernel drops the lock when the process ends however it ends (SIGKILL, the OOM killer), so "no one holds
  the lock but results.json says running" means the run is dead; `report` and `rerun` then settle its record
  (orchestrator/abandoned.py).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.discovery import RUN_MARKER
from orchestrator.results import RESULTS_FILE, utc_now

DEFAULT_RUNS_DIR = Path(".orchestrator") / "runs"
PLAN_FILE = "plan.json"
STEPS_DIR = "steps"
# What a run writes at its top level; only these are removed when a run folder is reused with --out.
RUN_OUTPUTS = (RESULTS_FILE, PLAN_FILE, "junit.xml", "report.html", "devops.json", STEPS_DIR)

# Lock file descriptors this process holds, by run folder: a process (the trigger worker) may prepare the same
# folder again, and must not then find itself in the way.
_HELD: dict[Path, int] = {}


@dataclass(frozen=True)
class Holder:
    """Who wrote (or is writing) a run folder, as its marker says."""

    pid: int | None
    host: str | None
    run_id: str | None
    since: str | None

    def __str__(self) -> str:
        where = f" on {self.host}" if self.host else ""
        since = f" since {self.since}" if self.since else ""
        run = f"run {self.run_id}, " if self.run_id else ""
        return f"{run}process {self.pid if self.pid is not None else '?'}{where}{since}"


def new_run_id() -> str:
    """Sortable by time, unique across concurrent runs on one machine."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def prepare_run_dir(out: Path | None, run_id: str) -> Path:
    """Create (or reuse) the run folder and lock it for this process.

    A folder that exists must be empty or a run folder this tool wrote (it holds the marker); reusing one
    replaces that run's files. InvalidInputError (exit 2) when the folder is taken by a live run, is not ours
    to overwrite, or cannot be written."""
    run_dir = out if out is not None else DEFAULT_RUNS_DIR / run_id
    try:
        if run_dir.exists() or run_dir.is_symlink():
            if not run_dir.is_dir():
                raise _problem(run_dir, "expected a folder, found a file")
            marker = run_dir / RUN_MARKER
            if any(run_dir.iterdir()) and not (marker.is_file() and not marker.is_symlink()):
                raise _problem(run_dir, "the folder is not empty and is not a run folder this tool wrote (no "
                                        f"{RUN_MARKER}); refusing to overwrite it: choose an empty or new folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        run_dir = run_dir.resolve()
        _lock(run_dir, run_id)
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        (run_dir / STEPS_DIR).mkdir()
    except OSError as error:
        raise _problem(run_dir, f"cannot write the run folder there ({error.strerror or error})") from None
    return run_dir


def release_run_dir(run_dir: Path) -> None:
    """Drop this process's lock on `run_dir` (the marker stays). Ending the process does the same."""
    fd = _HELD.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)


def step_dir(run_dir: Path, step_id: str) -> Path:
    return run_dir / STEPS_DIR / step_id


def read_holder(run_dir: Path) -> Holder | None:
    """What the marker says, or None when there is no readable marker."""
    try:
        data = json.loads((run_dir / RUN_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return Holder(
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        host=data.get("host") if isinstance(data.get("host"), str) else None,
        run_id=data.get("run_id") if isinstance(data.get("run_id"), str) else None,
        since=data.get("since") if isinstance(data.get("since"), str) else None,
    )


def is_live(run_dir: Path) -> bool | None:
    """True while a process holds the folder's lock; False when none does; None for a folder without marker
    (not written by this tool, or before markers existed: nothing can be said)."""
    marker = run_dir / RUN_MARKER
    if run_dir.resolve() in _HELD:
        return True
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # closing drops the shared lock taken just to look
    return False


def _lock(run_dir: Path, run_id: str) -> None:
    if run_dir in _HELD:
        fd = _HELD[run_dir]
    else:
        # O_NOFOLLOW: a notebook may have replaced the marker with a link to a file of the user's, which
        # truncating would destroy; such a folder is refused like any other that cannot be written.
        fd = os.open(run_dir / RUN_MARKER, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # less the umask, as open(2) applies it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = read_holder(run_dir)
            raise _problem(run_dir, f"another run is writing this folder ({holder or 'a process that has not said who it is yet'}); "
                                    "wait for it to end or choose another --out") from None
        _HELD[run_dir] = fd
    marker = {"tool": "orchestrator", "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
              "since": utc_now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(marker) + "\n").encode("utf-8"), 0)


def _problem(run_dir: Path, message: str) -> InvalidInputError:
    return InvalidInputError([Problem(str(run_dir), "--out", message)])
