"""The embedded default: run the pipeline on this machine with concurrent local kernels.

Every step runs the step contract's own code (`steps/run_notebook.py`), in-process: one asyncio event loop
drives all kernels, so a step costs one kernel start and nothing else (no interpreter per step). Steps wait
for the steps they come `after`, then for a slot: CPU slots (`--jobs`, default the CPU count) or GPUs, one
notebook per GPU through CUDA_VISIBLE_DEVICES (docs/prior-art.md#gpu-sharing: notebooks sharing a GPU run out of
memory).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import time
import traceback
from typing import Any

from orchestrator.backends import CarriedResult, RunOptions, RunOutcome
from orchestrator.backends.gpus import visible_gpus
from orchestrator.backends.kernel_dirs import kernel_dirs
from orchestrator.backends.priority import ranks
from orchestrator.backends.slots import RankedSlots
from orchestrator.history.vcs import current_branch, current_commit
from orchestrator.plan.spec import ResolvedPlan, StepSpec
from orchestrator.progress import Progress
from orchestrator.report import render_step_page, warm_up
from orchestrator.results import INTERRUPTED_REASON, RunRecord, write_json_atomic
from orchestrator.run_folder import PLAN_FILE, step_dir
from steps import _isolation, _kernel, _warm, run_notebook
from steps.step_result import StepError, StepResult, read_result_file, retry_delay_s, write_result_file

log = logging.getLogger("orchestrator.local")

NO_GPU_REASON = "no GPU on this machine"
STOP_POLL_S = 0.25


class LocalBackend:
    name = "local"

    def run(self, plan: ResolvedPlan, options: RunOptions, progress: Progress) -> RunOutcome:
        return asyncio.run(_LocalRun(plan, options, progress).execute())


class _LocalRun:
    def __init__(self, plan: ResolvedPlan, options: RunOptions, progress: Progress) -> None:
        self.plan = plan
        self.options = options
        self.progress = progress
        self.interrupted: str | None = None
        # Probed once per process; a machine without PID namespaces is said once, here, and recorded.
        self.isolation = _isolation.detect()
        self.record = RunRecord(
            options.run_dir,
            run_id=options.run_id,
            backend="local",
            experiment=plan.experiment,
            step_order=[step.id for step in plan.steps],
            extra={"repairs": options.repairs, "root": str(plan.root), "commit": current_commit(plan.root),
                   "branch": current_branch(plan.root), "kernel_isolation": self.isolation.to_json()},
        )
        write_json_atomic(options.run_dir / PLAN_FILE, plan.to_json())
        # Each finished notebook is rendered to HTML on one background thread while the others run.
        self.renderer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="render")
        self.renders: list[asyncio.Future[Any]] = []
        # The next kernel starts while the current notebooks run (steps/_warm.py); the spares die with the run.
        starting = [step for step in plan.steps if step.skip is None and step.id not in options.carried]
        if starting:  # nbconvert and the report's template set up while the first kernels start, not after
            self.renderer.submit(warm_up)
        self.kernels = (_warm.KernelPool(options.run_dir / ".warm-parents", run_notebook.STEP_FOLDER_ENV)
                        if plan.warm_kernels and starting else None)
        self.kernelspecs = _kernel.RunKernelSpecs(kernel_dirs=kernel_dirs())

    async def execute(self) -> RunOutcome:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        self.done: dict[str, asyncio.Future[StepResult]] = {s.id: loop.create_future() for s in self.plan.steps}
        # Ready steps wait for a slot in rank order: the longest remaining chain of work first.
        self.ranks = ranks(self.plan, self.options.expected_durations)
        self.cpu_slots = RankedSlots(self.options.jobs or os.cpu_count() or 1)
        self.target_slots = {
            name: RankedSlots(target.local_slots)
            for name, target in self.plan.targets.items()
            if target.local_slots
        }
        needs_gpu = any(self.plan.targets[s.target].gpus for s in self.plan.steps if s.target in self.plan.targets)
        self.gpus: asyncio.Queue[str] = asyncio.Queue()
        for gpu in visible_gpus() if needs_gpu else []:
            self.gpus.put_nowait(gpu)
        self.gpu_count = self.gpus.qsize()

        self.progress.run_started(self.options.run_id, len(self.plan.steps), str(self.options.run_dir))
        if not self.isolation.confined:
            required = self.plan.isolation == "required" or _isolation.required_by_environment()
            self.progress.message(f"warning: {self.isolation.describe()}"
                                  + ("; isolation is required, so no notebook will run" if required else ""))
        tasks = [asyncio.create_task(self._run_step(step), name=step.id) for step in self.plan.steps]
        watcher = asyncio.create_task(self._watch_stop_request(tasks))
        # The handlers stay installed until the record is finished: a second Ctrl-C (or SIGHUP, SIGTERM) while
        # kernels are being stopped and the record written must not cut that short and leave it "running".
        with _signals_cancel(loop, tasks, self._note_interrupt):
            try:
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                if self.kernels is not None:
                    self.kernels.close()
            watcher.cancel()
            for step, outcome in zip(self.plan.steps, outcomes, strict=True):
                if self.done[step.id].done():
                    continue
                request = self._request(step, [])
                if isinstance(outcome, Exception):  # CancelledError is no Exception: that is an interrupt
                    self._finish(step, _runner_failure(request, outcome))
                else:
                    self._finish(step, _not_started(request))
            await asyncio.gather(*self.renders, return_exceptions=True)
            self.renderer.shutdown()
            extra = {"interrupted_by": self.interrupted} if self.interrupted else {}
            final = self.record.finish(interrupted=self.interrupted is not None, **extra)
        self.progress.run_finished(final.status, final.counts, time.monotonic() - started)
        return RunOutcome(status=final.status, results=final)

    async def _watch_stop_request(self, tasks: list[asyncio.Task[None]]) -> None:
        """A stop requested from another thread (e.g. DevOps shows the job cancelled) stops like Ctrl-C."""
        while self.options.stop.reason is None:
            await asyncio.sleep(STOP_POLL_S)
        self._note_interrupt(self.options.stop.reason)
        for task in tasks:
            task.cancel()

    def _note_interrupt(self, why: str, *, again: bool = False) -> None:
        if again:
            self.progress.message(f"{why}: still stopping kernels and finishing the run's record; please wait")
        elif self.interrupted is None:
            self.interrupted = why
            self.progress.message(f"stopping ({why}): every kernel is stopped; the run folder keeps what finished")

    async def _run_step(self, step: StepSpec) -> None:
        carried = self.options.carried.get(step.id)
        if carried is not None:
            self._finish(step, self._carry_over(step, carried))
            return
        if step.skip is not None:
            self._finish(step, run_notebook.skipped_result(self._request(step, []), step.skip))
            return
        # shield: cancelling this task (Ctrl-C) must not cancel the dependency's own result future.
        after = [await asyncio.shield(self.done[dep]) for dep in step.after]
        request = self._request(step, after)
        if not all(result.passed for result in after):
            # The runner turns this into a skip naming the dependency, without starting a kernel.
            self._finish(step, await run_notebook.run_step(request))
            return
        gpus_needed = self.plan.targets[step.target].gpus if step.target in self.plan.targets else 0
        if gpus_needed and self.gpu_count < gpus_needed:
            if self.options.gpu_fallback != "cpu":
                reason = NO_GPU_REASON if self.gpu_count == 0 else f"needs {gpus_needed} GPUs, this machine has {self.gpu_count}"
                self._finish(step, run_notebook.skipped_result(request, reason))
                return
            request.env["CUDA_VISIBLE_DEVICES"] = ""
            result = await self._attempts(step, request, self.cpu_slots)
            result = result.but(warnings=(*result.warnings, "GPU target ran on the CPU (--gpu-fallback cpu)"))
            write_result_file(request.output_dir, result)
            self._finish(step, result)
            return
        if gpus_needed:
            self._finish(step, await self._on_gpus(step, request, gpus_needed))
            return
        self._finish(step, await self._attempts(step, request, self.cpu_slots))

    async def _on_gpus(self, step: StepSpec, request: run_notebook.StepRequest, count: int) -> StepResult:
        taken = [await self.gpus.get() for _ in range(count)]
        try:
            request.env["CUDA_VISIBLE_DEVICES"] = ",".join(taken)
            return await self._attempts(step, request, None)
        finally:
            for gpu in taken:
                self.gpus.put_nowait(gpu)

    async def _attempts(
        self, step: StepSpec, request: run_notebook.StepRequest, slots: RankedSlots | None
    ) -> StepResult:
        for attempt in range(1, step.retries + 2):
            request.attempt = attempt
            async with _Lease(self.ranks[step.id], self.target_slots.get(step.target), slots) as lease:
                # The slot is free once the cells are done: the next kernel starts while this one exits.
                request.on_cells_done = lease.release
                self.progress.step_started(step.id, step.notebook, attempt)
                try:
                    result = await run_notebook.run_step(request)
                except asyncio.CancelledError:
                    # The runner has written the interrupted result before re-raising: keep it.
                    self._finish(step, read_result_file(request.output_dir) or
                                 run_notebook.skipped_result(request, INTERRUPTED_REASON))
                    raise
            delay = retry_delay_s(result, attempt, step.retries)
            if delay is not None:
                self.progress.message(f"step={step.id} transient failure; retrying in {delay:g} s")
                await asyncio.sleep(delay)
                continue
            return result
        raise AssertionError("unreachable: the last attempt always returns")

    def _request(self, step: StepSpec, after: list[StepResult]) -> run_notebook.StepRequest:
        root = self.plan.root
        return run_notebook.StepRequest(
            notebook_path=root / step.notebook,
            output_dir=step_dir(self.options.run_dir, step.id),
            step=step.id,
            notebook_rel=step.notebook,
            parameters=dict(step.parameters),
            kernel=step.kernel,
            kernel_required=step.kernel_required,
            timeout_s=step.timeout_s,
            cell_timeout_s=step.cell_timeout_s,
            target=step.target,
            environment=step.environment,
            expect=dict(step.expect),
            pythonpath=[root / folder for folder in step.pythonpath],
            secret_env=list(self.plan.secret_env),
            pass_env=list(self.plan.pass_env),
            isolation_required=self.plan.isolation == "required",
            output_limit_bytes=step.output_limit_bytes,
            after_results=after,
            after_outputs={self.plan.step(dep).notebook: step_dir(self.options.run_dir, dep) for dep in step.after},
            kernels=self.kernels,
            kernelspecs=self.kernelspecs,
        )

    def _carry_over(self, step: StepSpec, carried: CarriedResult) -> StepResult:
        """A result kept from the run being repaired: its files come along so the report's links work."""
        target = step_dir(self.options.run_dir, step.id)
        if carried.source_dir.is_dir() and carried.source_dir.resolve() != target.resolve():
            shutil.copytree(carried.source_dir, target, dirs_exist_ok=True)
        # A run of the history (--changed-since), or the run being repaired.
        return carried.result.but(carried_over_from=carried.origin or self.options.repairs)

    def _finish(self, step: StepSpec, result: StepResult) -> None:
        future = self.done[step.id]
        if future.done():
            return
        self.record.record(result)
        future.set_result(result)
        try:
            self.progress.step_finished(result)
        except OSError as error:  # the terminal is gone (SIGHUP): the record matters, the display does not
            log.debug("progress not shown: %s", error)
        if result.output_notebook and result.carried_over_from is None:
            loop = asyncio.get_running_loop()
            self.renders.append(loop.run_in_executor(self.renderer, render_step_page, self.options.run_dir, result))


def _not_started(request: run_notebook.StepRequest) -> StepResult:
    try:
        return run_notebook.skipped_result(request, INTERRUPTED_REASON)
    except OSError:  # the step folder is gone or is a file now (a notebook replaced it): record it anyway
        return StepResult(step=request.step, notebook=request.notebook_rel, status="skipped",
                          reason=INTERRUPTED_REASON, attempts=0)


def _runner_failure(request: run_notebook.StepRequest, error: Exception) -> StepResult:
    """The result of a step whose running raised (e.g. a notebook replaced its own step folder with a file):
    an error naming the cause, so the run's record is still finished and true."""
    # The traceback goes into the result (and the report), not onto the terminal.
    log.debug("step=%s failed outside the notebook", request.step, exc_info=error)
    return StepResult(
        step=request.step, notebook=request.notebook_rel, status="error", attempts=request.attempt,
        target=request.target, environment=request.environment, kernel=request.kernel,
        parameters=request.parameters,
        error=StepError(kind="infrastructure", ename=type(error).__name__,
                        evalue=f"the orchestrator could not run or record this step: {error}",
                        traceback="".join(traceback.format_exception(error))))


class _Lease:
    """Slots held by one attempt of one step, released exactly once: early (when the cells are done) or on
    leaving the block, whichever comes first."""

    def __init__(self, rank: Any, *semaphores: RankedSlots | None) -> None:
        self._rank = rank
        self._semaphores = [semaphore for semaphore in semaphores if semaphore is not None]
        self._held: list[RankedSlots] = []

    async def __aenter__(self) -> "_Lease":
        try:
            for semaphore in self._semaphores:
                await semaphore.acquire(self._rank)
                self._held.append(semaphore)
        except BaseException:
            self.release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        while self._held:
            self._held.pop().release()


@contextlib.contextmanager
def _signals_cancel(loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[None]], note: Any) -> Any:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) cancel every step: each runner kills its kernel's
    process tree and writes what it has, so no kernel outlives the run and the run folder stays true. A second
    signal does not cancel again (that would cut the runners' own clean-up short): it only says what is
    happening. The caller keeps this block open until the record is finished."""
    stopping = False

    def on_signal(signame: str) -> None:
        nonlocal stopping
        note(signame)
        if stopping:
            note(f"{signame} again", again=True)
            return
        stopping = True
        for task in tasks:
            task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(signum, on_signal, signal.Signals(signum).name)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, AttributeError):  # not the main thread, or Windows
            pass
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
