"""Run one notebook: the step contract (docs/architecture.md#step-contract).

    python steps/run_notebook.py NOTEBOOK --output-dir DIR [--parameters JSON] [--timeout S] ...

Whatever happens (a cell raises, a timeout, the kernel dies, the file is not a notebook, Ctrl-C/SIGTERM),
the output folder ends up with `result.json` and, whenever the notebook could be read, the executed notebook
(partial if it stopped early, with papermill's failure markers). Exit code: 0 passed (or skipped), 1 not
passed, 2 bad arguments.

The same code runs in two ways: as this script on every Azure ML node, and imported by the local backend,
which awaits many `run_step` coroutines concurrently in one event loop. So `run_step` has no process-wide
side effects: no chdir, no os.environ changes, no signal handlers, no atexit hooks.

Depends only on papermill, nbformat, nbclient, jupyter_client and the standard library (docs/architecture.md#parts-and-data-flow).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
import traceback as tb
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jupyter_client.kernelspec import KernelSpec
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbformat import NotebookNode

try:
    from . import _cli, _env_policy, _exits, _isolation, _kernel, _logs, _metrics, _notebook, _outputs, _warm
    from .ansi import strip_ansi
    from .settings import DEFAULT_OUTPUT_LIMIT, DEFAULT_SHUTDOWN_GRACE, DEFAULT_START_TIMEOUT
    from .step_result import ErrorKind, Status, StepError, StepResult, utc_now, write_result_file
except ImportError:  # run as a script: `python steps/run_notebook.py`, from any folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _cli  # type: ignore[no-redef]
    import _env_policy  # type: ignore[no-redef]
    import _exits  # type: ignore[no-redef]
    import _isolation  # type: ignore[no-redef]
    import _kernel  # type: ignore[no-redef]
    import _logs  # type: ignore[no-redef]
    import _metrics  # type: ignore[no-redef]
    import _notebook  # type: ignore[no-redef]
    import _outputs  # type: ignore[no-redef]
    import _warm  # type: ignore[no-redef]
    from ansi import strip_ansi  # type: ignore[no-redef]
    from settings import DEFAULT_OUTPUT_LIMIT, DEFAULT_SHUTDOWN_GRACE, DEFAULT_START_TIMEOUT  # type: ignore[no-redef]
    from step_result import ErrorKind, Status, StepError, StepResult, utc_now, write_result_file  # type: ignore[no-redef]

log = logging.getLogger("orchestrator.step")
# nbclient logs what this runner already classifies ("Kernel died while waiting for execute reply"); a named
# child logger lets the caller quiet it without touching nbclient's other users.
NBCLIENT_LOG = logging.getLogger("orchestrator.step.nbclient")

KERNEL_LOG = "kernel.log"
# Files one notebook leaves for another travel through step folders, which both backends keep: the step's
# output folder (the run folder's steps/<id>/ locally, the node's output on Azure ML, where each node has its
# own copy of the repository and nothing written there reaches the next node) and the folders of the steps
# it runs `after`, as {notebook path: folder}.
STEP_OUTPUT_ENV = "ORCHESTRATOR_STEP_OUTPUT"
AFTER_OUTPUTS_ENV = "ORCHESTRATOR_AFTER_OUTPUTS"
# The only variables a warm kernel (steps/_warm.py) gets after it started: they differ for every step.
STEP_FOLDER_ENV = (STEP_OUTPUT_ENV, AFTER_OUTPUTS_ENV)
PASSED: Final = "passed"
EXIT_PASSED, EXIT_NOT_PASSED = 0, 1  # and 2 for bad arguments (_cli.BadArguments)

# Kernel names found in notebooks that mean an installed kernel under another name: "python" is what some
# tools write for the default Python 3 kernel (Jupyter's own native kernel is "python3").
_KERNEL_ALIASES = {"python": "python3"}

parse_rule = _metrics.parse_rule  # the rule grammar, for callers that check rules before running
InvalidRule = _metrics.InvalidRule


@dataclass
class StepRequest:
    notebook_path: Path  # absolute path of the source notebook
    output_dir: Path  # gets <notebook-name>.ipynb, result.json, kernel.log
    step: str = ""  # step id (default: slug of notebook_rel)
    notebook_rel: str = ""  # path relative to the plan root, forward slashes (default: file name)
    parameters: dict[str, Any] = field(default_factory=dict)
    kernel: str = "python3"  # used when the notebook names no kernel or one not installed here (warning)
    kernel_required: bool = False  # the plan named this kernel: use it; status error (no_kernel) if missing
    timeout_s: float | None = None  # whole notebook wall clock, from when the kernel is ready
    cell_timeout_s: float | None = None
    cwd: Path | None = None  # default: the notebook's folder
    target: str = "cpu"
    environment: str = "default"
    expect: dict[str, str] = field(default_factory=dict)  # metric -> rule
    pythonpath: list[Path] = field(default_factory=list)  # prepended to the kernel's PYTHONPATH
    env: dict[str, str] = field(default_factory=dict)  # extra kernel env, e.g. CUDA_VISIBLE_DEVICES
    secret_env: list[str] = field(default_factory=list)  # extra names removed from the kernel env
    pass_env: list[str] = field(default_factory=list)  # names the secret policy lets through (docs/isolation.md)
    isolation_required: bool = False  # refuse to run a kernel that cannot get its own PID namespace
    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT  # cap on stored output per cell (steps/settings.py)
    attempt: int = 1
    after_results: list[StepResult] = field(default_factory=list)  # results of the steps this runs after
    after_outputs: dict[str, Path] = field(default_factory=dict)  # their output folders, by notebook path
    start_timeout_s: float = DEFAULT_START_TIMEOUT  # kernel start (nbclient's startup_timeout); a miss is `infrastructure`
    # Seconds the kernel may take to exit by itself after a shutdown request before its process tree is killed.
    # A clean exit is what papermill and nbmake give: it flushes files a notebook left open (`f = open(...)`
    # with no close loses its data to a kill) and runs atexit handlers (mlflow, wandb). 0 kills at once.
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE
    # Called once when the cells are done and the kernel is about to be shut down. The local backend frees
    # the notebook's slot here, so the next kernel starts while this one exits.
    on_cells_done: Callable[[], None] | None = None
    # Kernels started ahead of time by the run (steps/_warm.py); None: every kernel starts when its step does.
    kernels: _warm.KernelPool | None = None
    # The run's kernelspec lookups, each name once (steps/_kernel.py); None: looked up for this step.
    kernelspecs: _kernel.RunKernelSpecs | None = None


@dataclass
class _Outcome:
    """How the execution ended; `cell` is an index in the working notebook (translated for the result)."""

    status: Status
    kind: ErrorKind | None = None
    cell: int | None = None
    ename: str = ""
    evalue: str = ""
    traceback: str = ""


async def run_step(request: StepRequest) -> StepResult:
    """Run the notebook; write output_dir/result.json and the executed notebook; return the result.

    Never raises for notebook problems. If cancelled (the local backend got Ctrl-C), kills the kernel's
    process tree, writes the partial notebook and a result with status "error", error.kind "interrupted",
    then re-raises CancelledError.
    """
    return await _StepRun(request).run()


def preflight(request: StepRequest) -> tuple[str | None, list[str]]:
    """(what would stop this step before its first cell, or None; warnings), with no kernel started and
    nothing written: `orchestrator validate` reports exactly what `run` would refuse."""
    run = _StepRun(request)
    prepared = run._prepare()
    return (prepared.evalue if isinstance(prepared, _Outcome) else None), run.warnings


def skipped_result(request: StepRequest, reason: str) -> StepResult:
    """A result for a step that did not run (and why); also written to output_dir/result.json."""
    now = utc_now()
    result = _result(request, status="skipped", started_at=now, finished_at=now, duration_s=0.0,
                     kernel=request.kernel, error=None).but(reason=reason, attempts=0)  # it never started
    write_result_file(request.output_dir, result)
    log.info("step=%s status=skipped reason=%s", result.step, json.dumps(reason))
    return result



class _StepRun:
    def __init__(self, request: StepRequest) -> None:
        self.request = request
        self.started_at = utc_now()
        self.t0 = time.monotonic()
        # The whole-notebook clock starts when the kernel is ready (docs/step-runner.md, "Time limits"): on a
        # loaded machine a kernel start can take seconds, and a limit must never run out before the first cell.
        # The start has its own bound, start_timeout_s.
        self.deadline: float | None = None
        self.kernel_name = request.kernel
        self.warnings: list[str] = []
        self.work: _notebook.WorkingNotebook | None = None
        self.kernel: _kernel.LocalKernel | None = None
        self.client: _outputs.CappedClient | None = None  # once the kernel is ready
        self.running: int | None = None  # working index of the cell being executed

    async def run(self) -> StepResult:
        try:
            return await self._run()
        except asyncio.CancelledError:
            cell = self.running
            if cell is not None and self.work is not None:
                _notebook.cell_finished(self.work.nb.cells[cell], failed=True)
            self._finish(_Outcome("error", "interrupted", cell, "Interrupted",
                                  "the run was interrupted (Ctrl-C, SIGTERM or a cancelled job)"
                                  + (f" while {self._where(cell)} was running" if cell is not None else "")))
            raise
        except Exception as exc:  # a bug here or in a library: still leave a true result behind
            # One line on the terminal; the traceback is in the result (and with -v, in the log).
            log.error("step=%s runner failure: %s: %s", self.request.step or self.request.notebook_path,
                      type(exc).__name__, exc)
            log.debug("runner failure", exc_info=True)
            return self._finish(_Outcome("error", "infrastructure", self.running, type(exc).__name__,
                                         f"the step runner failed: {exc}", tb.format_exc()))

    async def _run(self) -> StepResult:
        request = self.request
        blocker = _blocking_dependency(request.after_results)
        if blocker is not None:
            return skipped_result(request, blocker)
        prepared = self._prepare()
        if isinstance(prepared, _Outcome):
            return self._finish(prepared)
        spec, rules = prepared
        outcome = await self._execute(spec)
        return self._finish(outcome, rules)

    def _prepare(self) -> _Outcome | tuple[KernelSpec, dict[str, _metrics.Rule]]:
        """Everything before the kernel starts: the rules, the notebook, the kernel, the parameters cell. An
        outcome when one of them stops the step (also what `preflight` reports)."""
        request = self.request
        try:
            rules = _metrics.parse_expectations(request.expect)
        except _metrics.InvalidRule as exc:
            return _Outcome("error", "expectation", ename="InvalidRule", evalue=str(exc))
        try:
            nb = _notebook.load_notebook(Path(request.notebook_path), self.warnings)
        except _notebook.InvalidNotebook as exc:
            return _Outcome("error", "invalid_notebook", ename="InvalidNotebook", evalue=str(exc))
        spec, problem = self._choose_kernel(nb)
        self.work = _notebook.prepare(nb)
        if spec is None:
            return _Outcome("error", "no_kernel", ename="NoSuchKernel", evalue=problem)
        try:
            _notebook.inject_parameters(self.work, request.parameters, self.kernel_name,
                                        spec.language or _notebook_language(nb) or "python")
        except _notebook.InvalidNotebook as exc:  # parameters papermill cannot write in this language
            return _Outcome("error", "invalid_notebook", ename="InvalidNotebook", evalue=str(exc))
        self.warnings.extend(self.work.warnings)
        return spec, rules

    def _choose_kernel(self, nb: NotebookNode) -> tuple[KernelSpec | None, str]:
        """(kernelspec, "") or (None, why). Records the kernel used and any substitution warning.

        The notebook's own kernel when installed; else the request's kernel, but only for a notebook in that
        kernel's language (docs/step-runner.md, "Which kernel"): R code run by Python can even pass."""
        request = self.request
        named = str(nb.metadata.get("kernelspec", {}).get("name") or "")
        if request.kernel_required:
            spec = _kernel.find_kernelspec(request.kernel, request.kernelspecs)
            if spec is None:
                return None, f"kernel {request.kernel!r}, named by the plan, is not installed here{_installed()}"
            if named and named != request.kernel:
                self.warnings.append(f"ran on the plan's kernel {request.kernel!r}; the notebook names {named!r}")
            self._record_kernel(nb, request.kernel, spec)
            return spec, ""
        if named:
            spec = _kernel.find_kernelspec(named, request.kernelspecs)
            if spec is not None:
                self.kernel_name = named
                return spec, ""
            alias = _KERNEL_ALIASES.get(named, "")
            spec = _kernel.find_kernelspec(alias, request.kernelspecs)
            if spec is not None:
                self._record_kernel(nb, alias, spec)
                return spec, ""
        spec = _kernel.find_kernelspec(request.kernel, request.kernelspecs)
        if spec is None:
            return None, f"kernel {request.kernel!r} is not installed here{_installed()}"
        language = _notebook_language(nb)
        missing = f"the notebook's kernel {named!r} is not installed here" if named else "the notebook names no kernel"
        if language is not None and _same_language(language, spec.language) is False:
            return None, (f"{missing}, and it is written in {language} while the fallback kernel {request.kernel!r} "
                          f"runs {spec.language}: install a {language} kernel{_installed()}")
        self.warnings.append(f"{missing}: ran on {request.kernel!r}")
        self._record_kernel(nb, request.kernel, spec)
        return spec, ""

    def _record_kernel(self, nb: NotebookNode, name: str, spec: KernelSpec) -> None:
        # The output notebook names the kernel it really ran on, so reopening it picks that kernel.
        self.kernel_name = name
        nb.metadata["kernelspec"] = {"name": self.kernel_name, "display_name": spec.display_name,
                                     "language": spec.language}

    async def _execute(self, spec: KernelSpec) -> _Outcome:
        request = self.request
        output_dir = Path(request.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        folders = {STEP_OUTPUT_ENV: str(output_dir.resolve()),
                   AFTER_OUTPUTS_ENV: json.dumps({notebook: str(Path(folder).resolve())
                                                  for notebook, folder in request.after_outputs.items()})}
        env, withheld = _env_policy.kernel_environment(
            os.environ, extra={**folders, **request.env}, pythonpath=request.pythonpath,
            policy=_env_policy.EnvPolicy.of(request.secret_env, request.pass_env))
        try:
            isolation = _isolation.choose(request.isolation_required)
        except _isolation.IsolationUnavailable as exc:
            return _Outcome("error", "infrastructure", None, "IsolationUnavailable", str(exc))
        cwd = Path(request.cwd) if request.cwd else Path(request.notebook_path).resolve().parent
        warm = request.kernels.parent_for(spec, env, isolation, cwd) if request.kernels is not None else None

        def kernel(parent: _warm.WarmParent | None) -> _kernel.LocalKernel:
            return _kernel.LocalKernel(self.kernel_name, spec, cwd=cwd, env=env, log_path=output_dir / KERNEL_LOG,
                                       isolation=isolation, withheld=withheld, warm=parent,
                                       specs=request.kernelspecs)

        self.kernel = kernel(warm)
        log_cap = _logs.LogCap(output_dir / KERNEL_LOG)
        watching = asyncio.ensure_future(log_cap.watch())
        try:
            try:
                try:
                    await self.kernel.start(request.start_timeout_s)
                except _kernel.KernelStartError as exc:
                    if warm is None:
                        raise
                    # Whatever went wrong in the fork, a cold start reports exactly what a cold start does.
                    await self.kernel.stop()
                    with open(output_dir / KERNEL_LOG, "ab") as log_file:
                        log_file.write(f"--- the forked kernel did not start ({exc}); starting it the ordinary "
                                       "way\n".encode())
                    self.kernel = kernel(None)
                    await self.kernel.start(request.start_timeout_s)
                else:
                    if warm is not None and request.kernels is not None:
                        request.kernels.forked += 1
            except _kernel.KernelStartError as exc:
                return _Outcome("error", "infrastructure", None, "KernelStartError", str(exc), self._log_tail())
            if request.timeout_s:
                self.deadline = time.monotonic() + request.timeout_s
            self._language_info()
            return await self._run_cells(self._client())
        except asyncio.CancelledError:
            self.kernel.kill_now()  # synchronous: nothing may outlive a cancelled step
            raise
        finally:
            watching.cancel()
            if request.on_cells_done is not None:
                request.on_cells_done()
            await self.kernel.stop(request.shutdown_grace_s)
            log_cap.check()  # what the kernel wrote last, and on its way out

    def _client(self) -> _outputs.CappedClient:
        assert self.work is not None and self.kernel is not None
        client = _outputs.CappedClient(self.work.nb, output_limit=self.request.output_limit_bytes,
                                       km=self.kernel.km, kernel_name=self.kernel_name, timeout=None,
                                       allow_errors=False, record_timing=True, log=NBCLIENT_LOG)
        client.kc = self.kernel.client
        self.client = client
        return client

    def _language_info(self) -> None:
        # As nbclient and papermill record it, from the kernel_info reply the start already received.
        assert self.work is not None and self.kernel is not None
        if "language_info" in self.kernel.info:
            self.work.nb.metadata["language_info"] = self.kernel.info["language_info"]

    async def _run_cells(self, client: _outputs.CappedClient) -> _Outcome:
        assert self.work is not None and self.kernel is not None
        for index, cell in enumerate(self.work.nb.cells):
            if cell.cell_type != "code":
                continue
            limit, which = self._time_left()
            if limit is not None and limit <= 0:
                return self._timed_out(index, which)
            self.running = index
            _notebook.cell_started(cell)
            task = asyncio.ensure_future(
                client.async_execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            )
            task.add_done_callback(_consume)
            try:
                done, _ = await asyncio.wait({task}, timeout=limit)
            except asyncio.CancelledError:
                task.cancel()
                raise
            if not done:
                # Kill first: nbclient's interrupt-on-timeout relies on the kernel honouring SIGINT, and a
                # stuck C extension or a child process would not.
                self.kernel.kill_now()
                await _drain(task)
                _notebook.cell_finished(cell, failed=True)
                return self._timed_out(index, which)
            exc = task.exception()
            outcome = self._classify(index, cell, exc)
            _notebook.cell_finished(cell, failed=outcome is not None and outcome.status != PASSED)
            if outcome is not None:
                return outcome
        self.running = None
        return _Outcome(PASSED)

    def _classify(self, index: int, cell: NotebookNode, exc: BaseException | None) -> _Outcome | None:
        """None to go on with the next cell, else how the notebook ended."""
        if exc is None:
            return self._error_in_outputs(index, cell)
        if isinstance(exc, CellExecutionError):
            ename, evalue, trace = _cell_error(cell, exc)
            if ename == "SystemExit" and evalue in ("", "0"):
                # papermill's rule: sys.exit(0) ends the notebook early and successfully.
                self.warnings.append(f"the notebook stopped early with SystemExit({evalue}) in cell "
                                     f"{self._source(index)}")
                self.running = None
                return _Outcome(PASSED)
            return _Outcome("failed", "cell_error", index, ename, evalue, trace)
        if isinstance(exc, DeadKernelError):
            assert self.kernel is not None
            return _Outcome("crashed", "kernel_died", index, "DeadKernelError",
                            f"the kernel died while {self._where(index)} was running "
                            f"({_exits.death_hint(self.kernel.returncode())})", self._log_tail())
        raise exc

    def _error_in_outputs(self, index: int, cell: NotebookNode) -> _Outcome | None:
        """A cell whose execute_reply said ok but whose outputs hold an error failed all the same (papermill
        and nbmake agree): IPython reports an exception raised after the cell's code, by a post_execute or
        post_run_cell callback (matplotlib's inline backend rendering a figure, for one), as an error output
        only. nbclient's rule stands: a cell tagged `raises-exception` may hold errors."""
        error = _notebook.error_output(cell)
        if error is None or _notebook.RAISES_TAG in _notebook.tags(cell):
            return None
        ename, evalue = str(error.get("ename", "")), str(error.get("evalue", ""))
        self.warnings.append(f"{self._where(index)} ran, but an exception was raised after its code "
                             f"({ename}: {_notebook.first_line(evalue)}), e.g. by a post-execute callback or a "
                             "figure that failed to render: the kernel reported success, the cell failed")
        return _Outcome("failed", "cell_error", index, ename, evalue, "\n".join(error.get("traceback", [])))

    def _time_left(self) -> tuple[float | None, str]:
        """Seconds the next cell may run, and which limit that is ("cell" or "notebook")."""
        cell_limit = self.request.cell_timeout_s or None
        if self.deadline is None:
            return cell_limit, "cell"
        notebook_left = self.deadline - time.monotonic()
        if cell_limit is not None and cell_limit <= notebook_left:
            return cell_limit, "cell"
        return notebook_left, "notebook"

    def _timed_out(self, index: int, which: str) -> _Outcome:
        where = self._where(index)
        if which == "cell":
            message = f"{where} ran longer than the cell timeout of {_seconds(self.request.cell_timeout_s)}"
        else:
            message = (f"the notebook ran longer than its timeout of {_seconds(self.request.timeout_s)}, counted "
                       f"from when its kernel was ready (stopped in {where})")
        return _Outcome("timed_out", "timeout", index, "TimeoutError", message + "; the kernel was killed")

    def _source(self, index: int | None) -> int | None:
        return self.work.source_of(index) if self.work is not None else None

    def _where(self, index: int) -> str:
        """'cell 3' by its index in the source file, or the cell this runner added."""
        source = self._source(index)
        return f"cell {source}" if source is not None else "the injected parameters cell"

    def _log_tail(self) -> str:
        return _logs.log_tail(Path(self.request.output_dir) / KERNEL_LOG)

    def _finish(self, outcome: _Outcome, rules: Mapping[str, _metrics.Rule] | None = None) -> StepResult:
        """Metrics, expectations, the written notebook and result.json, for any outcome."""
        request = self.request
        work = self.work
        cells = work.nb.cells if work is not None else []
        metrics = _metrics.read_metrics(cells)
        ran = outcome.status in (PASSED, "failed", "timed_out", "crashed")
        expectations = _metrics.check_expectations(rules, _metrics.read_recorded(cells)) if rules and ran else []
        if outcome.status == PASSED and not all(entry.ok for entry in expectations):
            outcome = _Outcome("failed", "expectation", None, "ExpectationFailed",
                               _metrics.describe_misses(expectations))
        error = None
        if outcome.kind is not None:  # before the notebook is written: failure markers shift the cells
            error = StepError(kind=outcome.kind, cell_index=self._source(outcome.cell), ename=outcome.ename,
                              evalue=outcome.evalue, traceback=strip_ansi(outcome.traceback))
        output_notebook = self._write_notebook(outcome) if work is not None else None
        finished = time.monotonic()
        result = _result(request, status=outcome.status, started_at=self.started_at, finished_at=utc_now(),
                         duration_s=round(finished - self.t0, 3), kernel=self.kernel_name, error=error).but(
            metrics=metrics, expectations=tuple(expectations), output_notebook=output_notebook,
            warnings=tuple(self.warnings), output_tail=_notebook.output_tail(cells))
        write_result_file(request.output_dir, result)
        log.info("step=%s status=%s secs=%.2f", result.step, outcome.status, finished - self.t0)
        return result

    def _write_notebook(self, outcome: _Outcome) -> str:
        assert self.work is not None
        work = self.work
        notes = self.client.close_cells() if self.client is not None else []
        notes += _outputs.cap_outputs(work.nb.cells, self.request.output_limit_bytes)
        self.warnings.extend(f"{self._where(index)}: {note}" for index, note in notes)
        if self.client is not None:
            self.client.set_widgets_metadata()  # the widget state this run produced, as nbclient stores it
        failed_at = outcome.cell if outcome.status != PASSED else None
        meta = work.nb.metadata.setdefault("papermill", {})
        meta.update(start_time=self.started_at, end_time=utc_now(), duration=round(time.monotonic() - self.t0, 3),
                    exception=failed_at is not None, input_path=str(self.request.notebook_path),
                    output_path=str(Path(self.request.output_dir) / Path(self.request.notebook_path).name))
        if failed_at is not None:
            _notebook.mark_failure(work, failed_at)
        name = Path(self.request.notebook_path).name
        problem = _notebook.write_notebook(work.nb, Path(self.request.output_dir) / name)
        if problem is not None:
            self.warnings.append(f"the executed notebook does not pass nbformat's schema: {problem}")
        return name


def _cell_error(cell: NotebookNode, exc: CellExecutionError) -> tuple[str, str, str]:
    """ename, evalue, traceback of the failing cell, from its error output (structured) when present."""
    for output in reversed(cell.get("outputs", [])):
        if output.get("output_type") == "error":
            return str(output.get("ename", "")), str(output.get("evalue", "")), "\n".join(output.get("traceback", []))
    return exc.ename, exc.evalue, exc.traceback


def _consume(task: asyncio.Future[Any]) -> None:
    # Retrieve the exception of a cell task nobody awaits any more (timeout, cancellation), so that asyncio
    # does not log "exception was never retrieved".
    if not task.cancelled():
        task.exception()


async def _drain(task: asyncio.Future[Any]) -> None:
    task.cancel()
    await asyncio.wait({task})


def _blocking_dependency(after_results: list[StepResult]) -> str | None:
    for result in after_results:
        if not result.passed:
            return f"runs after {result.notebook}, which did not pass (status {result.status})"
    return None


def _result(request: StepRequest, *, status: Status, started_at: str, finished_at: str, duration_s: float,
            kernel: str, error: StepError | None) -> StepResult:
    notebook = request.notebook_rel or Path(request.notebook_path).name
    return StepResult(step=request.step or slug(notebook), notebook=notebook, status=status,
                      started_at=started_at, finished_at=finished_at, duration_s=duration_s,
                      attempts=request.attempt, target=request.target, environment=request.environment,
                      kernel=kernel, parameters=request.parameters, error=error)


def slug(notebook: str) -> str:
    """"examples/01 Train.ipynb" -> "examples_01_train" (the plan's step id rule, orchestrator/plan/graph.py)."""
    stem = notebook[: -len(".ipynb")] if notebook.lower().endswith(".ipynb") else notebook
    text = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]+", "_", stem.lower())).strip("_")
    if not text[:1].isalpha():
        text = f"nb_{text}".rstrip("_")
    return text[:255]


def _notebook_language(nb: NotebookNode) -> str | None:
    """The language the notebook says it is written in (kernelspec, else language_info), None if it says none."""
    for key, name in (("kernelspec", "language"), ("language_info", "name")):
        value = nb.metadata.get(key, {}).get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _same_language(a: str, b: str | None) -> bool | None:
    """Whether two kernel language names are one language (Python, python3), None when `b` is unknown."""
    if not b:
        return None
    key_a, key_b = (re.sub(r"[\s\d.]+$", "", name.strip().lower()) for name in (a, b))
    return key_a == key_b


def _installed() -> str:
    names = _kernel.installed_kernels()
    return f" (installed: {', '.join(names)})" if names else " (no kernel is installed)"


def _seconds(value: float | None) -> str:
    return f"{value:g} s" if value is not None else "?"


# ---------------------------------------------------------------------------------------------- the script


def main(argv: list[str] | None = None) -> int:
    """The script: parse, run one step, exit 0 (passed or skipped), 1 (not passed) or 2 (bad arguments)."""
    try:
        fields = _cli.parse_arguments(argv)
    except _cli.BadArguments as exc:
        return exc.exit_code
    after = [(Path(path), _cli.read_after_result(Path(path))) for path in fields.pop("after_result")]
    fields["after_results"] = [result for _, result in after]
    fields["after_outputs"] = {result.notebook: path if path.is_dir() else path.parent for path, result in after}
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if not _isolation.detect().confined:
        log.warning("%s", _isolation.detect().describe())
    result = asyncio.run(_run_with_signals(StepRequest(**fields)))
    return EXIT_PASSED if result is not None and result.status in (PASSED, "skipped") else EXIT_NOT_PASSED


async def _run_with_signals(request: StepRequest) -> StepResult | None:
    """SIGTERM (Azure ML cancelling the job) and Ctrl-C cancel the step: it kills the kernel tree, writes the
    partial notebook and an "interrupted" result, and the process exits non-zero."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(run_step(request))
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, task.cancel)
        except (NotImplementedError, RuntimeError):  # Windows
            pass
    try:
        return await task
    except asyncio.CancelledError:
        return None


if __name__ == "__main__":
    sys.exit(main())
