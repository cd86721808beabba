"""Warm kernel start: the next kernel is started ahead of time, while the current notebooks run.

Why ahead of time, not a fork of a warm parent: every kernel lives in a PID namespace of its own (steps/_isolation.py),
entered by exec'ing `unshare` and the namespace's init; a fork from one warm parent would have to rebuild that
namespace, its /proc and (as root) the capability drop by hand in the child. A kernel started early goes through
exactly the launch a cold kernel does (same wrapper, same init, same secret policy, a new process and namespace per
notebook), so nothing one notebook does can reach another: the warmth is only *when* it started.

A spare serves a notebook whose kernelspec, working directory, isolation and environment match the one it was
started with, except for the variables named `late` (each step's own folders, docs/step-runner.md), which the
claiming step sets in the kernel's `os.environ` before its first cell, with a silent request that binds no name
in the notebook's namespace and counts no execution. Anything else that differs starts cold, as before.

docs/step-runner.md, "Warm kernel start", describes it for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec

try:
    from . import _isolation, _kernel
except ImportError:  # run as a script (steps/run_notebook.py puts this folder on sys.path)
    import _isolation  # type: ignore[no-redef]
    import _kernel  # type: ignore[no-redef]

_SETUP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class _Key:
    """What a spare kernel was started with; a step may take it only if its own key is equal."""

    spec_name: str
    argv: tuple[str, ...]
    cwd: str
    env: frozenset[tuple[str, str]]  # without the late variables
    withheld: tuple[str, ...]
    isolation: _isolation.Isolation


@dataclass
class _Spare:
    kernel: _kernel.LocalKernel
    ready: asyncio.Task[None]


class KernelPool:
    """Spare kernels for one run: at most `spares` per key, all stopped by `close` (the run's end).

    `expected` is how many kernels the run will ask for: no spare is started that no step is left to take (a
    one-notebook run starts none, and the last notebooks do not pay for a kernel nobody uses)."""

    def __init__(self, folder: Path, late: Collection[str], *, expected: int, spares: int = 1) -> None:
        # Spare logs live in `folder`, on the run folder's file system: a claimed spare's log is renamed to the
        # step's kernel.log, and the kernel keeps writing to it through the same open file.
        self.folder = folder
        self.late = frozenset(late)
        self.spares = spares
        self.expected = expected
        self._pool: dict[_Key, list[_Spare]] = {}
        self._closed = False
        self.started = 0  # spares started, and claimed: for the bench and tests
        self.claimed = 0

    def eligible(self, spec: KernelSpec) -> bool:
        # The late variables are set by Python code in the kernel: ipykernel only.
        return not self._closed and _kernel.is_ipykernel(spec) and os.name == "posix"

    async def take(self, spec_name: str, spec: KernelSpec, *, cwd: Path, env: Mapping[str, str], log_path: Path,
                   isolation: _isolation.Isolation, withheld: Sequence[str],
                   start_timeout_s: float) -> _kernel.LocalKernel | None:
        """A started kernel for this step, its late variables set and its log now `log_path`; None when no spare
        matches (start one cold). Either way a spare for the next step with the same key is started."""
        self.expected -= 1
        if not self.eligible(spec):
            return None
        key = self._key(spec_name, spec, cwd, env, withheld, isolation)
        waiting = self._pool.get(key, [])
        spare = waiting.pop(0) if waiting else None
        self._replenish(key, spec, cwd, env, isolation, withheld, start_timeout_s)
        if spare is None:
            return None
        try:
            await spare.ready
        except asyncio.CancelledError:
            spare.kernel.kill_now()
            await _quietly_stop(spare.kernel)
            raise
        except Exception:  # the spare did not start: this step starts its own and reports what that does
            await _quietly_stop(spare.kernel)
            return None
        if log_path.exists() or not _move_log(spare.kernel, log_path):
            # A retry appends to the earlier attempt's kernel.log, which a rename would replace.
            await _quietly_stop(spare.kernel)
            return None
        try:
            await _set_late(spare.kernel, {name: env[name] for name in self.late if name in env})
        except asyncio.CancelledError:
            spare.kernel.kill_now()
            await _quietly_stop(spare.kernel)
            raise
        except Exception:  # died or no answer: this step starts its own kernel instead
            await _quietly_stop(spare.kernel)
            return None
        self.claimed += 1
        return spare.kernel

    def _key(self, spec_name: str, spec: KernelSpec, cwd: Path, env: Mapping[str, str], withheld: Sequence[str],
             isolation: _isolation.Isolation) -> _Key:
        early = frozenset((name, value) for name, value in env.items() if name not in self.late)
        return _Key(spec_name, tuple(spec.argv), str(cwd), early, tuple(sorted(withheld)), isolation)

    def _replenish(self, key: _Key, spec: KernelSpec, cwd: Path, env: Mapping[str, str],
                   isolation: _isolation.Isolation, withheld: Sequence[str], start_timeout_s: float) -> None:
        waiting = self._pool.setdefault(key, [])
        in_flight = sum(len(spares) for spares in self._pool.values())
        while len(waiting) < self.spares and in_flight < self.expected:
            in_flight += 1
            self.folder.mkdir(parents=True, exist_ok=True)
            log_path = self.folder / f"spare-{secrets.token_hex(6)}.log"
            early = {name: value for name, value in env.items() if name not in self.late}
            kernel = _kernel.LocalKernel(key.spec_name, spec, cwd=cwd, env=early, log_path=log_path,
                                         isolation=isolation, withheld=withheld)
            ready = asyncio.ensure_future(kernel.start(start_timeout_s))
            ready.add_done_callback(_retrieve)
            waiting.append(_Spare(kernel, ready))
            self.started += 1

    async def close(self) -> None:
        """Stop every spare (also on Ctrl-C: the run's end must leave no kernel behind)."""
        self._closed = True
        spares = [spare for waiting in self._pool.values() for spare in waiting]
        self._pool.clear()
        for spare in spares:
            spare.ready.cancel()
            spare.kernel.kill_now()
        for spare in spares:
            with contextlib.suppress(BaseException):
                await spare.ready
            await _quietly_stop(spare.kernel)
            with contextlib.suppress(OSError):
                spare.kernel.log_path.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def _retrieve(task: asyncio.Task[None]) -> None:
    # A spare that failed to start is reported by whoever claims it (it then starts cold); never "never retrieved".
    if not task.cancelled():
        task.exception()


async def _quietly_stop(kernel: _kernel.LocalKernel) -> None:
    with contextlib.suppress(Exception):
        await kernel.stop()
    with contextlib.suppress(OSError):
        if kernel.log_path.name.startswith("spare-"):
            kernel.log_path.unlink()


def _move_log(kernel: _kernel.LocalKernel, log_path: Path) -> bool:
    try:
        os.rename(kernel.log_path, log_path)  # same inode: the kernel's stdout and stderr now write to log_path
    except OSError:  # another file system: not worth a copy
        return False
    kernel.log_path = log_path
    with open(log_path, "ab") as log:
        log.write(b"--- started ahead of time (warm kernel start, docs/step-runner.md)\n")
    return True


async def _set_late(kernel: _kernel.LocalKernel, values: Mapping[str, str]) -> None:
    """Set the step's own variables in the kernel's os.environ before its first cell. An expression, run silent:
    IPython then binds no name (not even `_`), keeps no history and counts no execution."""
    if not values:
        return
    code = f"__import__('os').environ.update(__import__('json').loads({json.dumps(json.dumps(dict(values)))}))"
    client: Any = kernel.client
    msg_id = client.execute(code, silent=True, store_history=False, allow_stdin=False)
    while True:
        reply = await client.shell_channel.get_msg(timeout=_SETUP_TIMEOUT_S)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    if reply["content"].get("status") != "ok":
        raise _kernel.KernelStartError(f"could not set the step's environment in a warm kernel: {reply['content']}")
