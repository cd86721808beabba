"""`orchestrator run` and `orchestrator rerun`: run a plan on a backend, then build the report (and publish it).

Thin: parse, call the library (orchestrator.running), translate the outcome into an exit code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.options import (
    changed_since_option,
    devops_context,
    devops_options,
    load_from_options,
    local_run_options,
    plan_options,
    workspace_from,
    workspace_options,
)
from orchestrator.azureml.emulator.cli import check_emulation, emulated, emulation_options
from orchestrator.errors import InvalidInputError, Problem, exit_code_for

if TYPE_CHECKING:
    from orchestrator.devops.context import DevOpsContext
    from orchestrator.devops.testrun import TestRunOutcome
    from orchestrator.plan.spec import ResolvedPlan
    from orchestrator.backends import CarriedResult

log = logging.getLogger("orchestrator")


@click.command()
@plan_options
@click.option("--backend", default="local", show_default=True, help="Where to run: local or azureml.")
@local_run_options
@click.option("--wait/--no-wait", default=True, help="azureml: wait for the pipeline and build the report.")
@click.option("--require-isolation", is_flag=True,
              help="Fail every notebook instead of running it without its own PID namespace (as the plan's "
              "`isolation: required`; docs/isolation.md).")
@click.option("--no-warm-kernels", "cold_kernels", is_flag=True,
              help="Start every kernel as a new interpreter, not a fork of a warm parent (as the plan's `warm_kernels: false`; "
              "docs/step-runner.md, \"Warm kernel start\").")
@devops_options("Report to Azure DevOps while running")
@workspace_options
@changed_since_option
@emulation_options
def run(path: Path, plan_file: Path | None, backend: str, only: tuple[str, ...], params: tuple[str, ...],
        jobs: int | None, out: Path | None, gpu_fallback: str, wait: bool, require_isolation: bool, cold_kernels: bool,
        devops: bool,
        callback: Path | None, subscription: str | None, resource_group: str | None, workspace: str | None,
        workspace_config: Path | None, changed_since: str | None, emulate: bool, assume: tuple[str, ...],
        emulator_dir: Path | None) -> None:
    """Run the notebooks of PATH (a repository folder, a plan file, or one notebook)."""
    context = devops_context(devops, callback)
    plan = load_from_options(path, plan_file, only, params)
    carried: dict[str, CarriedResult] = {}
    if changed_since is not None:
        from orchestrator.changes import apply_selection, select_changed

        selection = select_changed(plan, changed_since, path=path, plan_file=plan_file)
        click.echo("\n".join(selection.lines(not_selected=False)), err=True)
        plan = apply_selection(plan, selection)
        if backend == "local":  # Azure ML reuses unchanged nodes by itself
            from orchestrator.changes.carry import carry_from_history

            kept = carry_from_history(plan, selection)
            click.echo("".join(f"  needed: {note}\n" for note in kept.notes), err=True, nl=False)
            carried = kept.results
    if require_isolation:
        plan = dataclasses.replace(plan, isolation="required")
    if cold_kernels:
        plan = dataclasses.replace(plan, warm_kernels=False)
    if backend == "local" and not emulate:
        from orchestrator.backends.warm_start import start_warm_parent

        start_warm_parent(plan, carried)  # its imports overlap the rest of the orchestrator's start
    settings = {}
    if backend == "azureml":
        settings["workspace"] = workspace_from(subscription, resource_group, workspace, workspace_config)
    with emulated(emulate, assume, emulator_dir, backend) as emulator_settings:
        execute(plan, backend=backend, out=out, jobs=jobs, gpu_fallback=gpu_fallback, wait=wait, devops=context,
                settings={**settings, **emulator_settings}, carried=carried)


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--failed", is_flag=True, help="Rerun only steps that did not pass (and steps after them).")
@click.option("--backend", type=click.Choice(["local", "azureml"]), default="local", show_default=True,
              help="azureml: RUN_DIR is the name of the pipeline job to rerun.")
@local_run_options
@click.option("--wait/--no-wait", default=False, help="azureml: follow the rerun and build its report.")
@workspace_options
@emulation_options
def rerun(run_dir: Path, failed: bool, backend: str, jobs: int | None, out: Path | None, gpu_fallback: str,
          wait: bool, subscription: str | None, resource_group: str | None, workspace: str | None,
          workspace_config: Path | None, emulate: bool, assume: tuple[str, ...], emulator_dir: Path | None) -> None:
    """Repair run: run RUN_DIR's pipeline again into a new run folder, keeping what passed with --failed.

    With --backend azureml, RUN_DIR names a pipeline job: it is resubmitted with the same run key, so Azure ML
    reuses the notebooks that completed and runs the rest again."""
    from orchestrator.rerun import plan_repair

    if backend == "azureml":
        from orchestrator.azureml.commands import rerun_azureml
        from orchestrator.run_folder import DEFAULT_RUNS_DIR, new_run_id

        folder = out or DEFAULT_RUNS_DIR / new_run_id()
        with emulated(emulate, assume, emulator_dir, backend) as emulator_settings:
            outcome = rerun_azureml(str(run_dir), failed=failed, wait=wait, out=folder,
                                    workspace=workspace_from(subscription, resource_group, workspace, workspace_config),
                                    **emulator_settings)
        if outcome.status != "submitted":
            report_run(folder.resolve(), None)
        sys.exit(exit_code_for(outcome.status))

    check_emulation(emulate, assume, emulator_dir, backend)
    repair = plan_repair(run_dir, failed_only=failed)
    if out is not None and out.resolve() == run_dir.resolve():
        raise InvalidInputError([Problem(str(out), "--out", "a repair run needs a new folder, not the run it repairs")])
    click.echo(f"repairing run {repair.repairs}: {len(repair.rerun)} to run, {len(repair.carried)} carried over", err=True)
    execute(repair.plan, backend="local", out=out, jobs=jobs, gpu_fallback=gpu_fallback, wait=True,
            carried=repair.carried, repairs=repair.repairs)


def execute(plan: ResolvedPlan, *, backend: str, out: Path | None, jobs: int | None, gpu_fallback: str, wait: bool,
            carried: dict[str, CarriedResult] | None = None, repairs: str | None = None,
            devops: DevOpsContext | None = None, settings: dict[str, Any] | None = None) -> None:
    """Run the plan into a new run folder, report it (even after a crash), exit with the run's code."""
    from orchestrator.backends import RunOptions, get_backend
    from orchestrator.history import planning_durations, remember_run
    from orchestrator.history.baselines import resolve_baselines
    from orchestrator.progress import make_progress
    from orchestrator.run_folder import new_run_id, prepare_run_dir, release_run_dir
    from orchestrator.running import Finished, run_plan

    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    plan, notes = resolve_baselines(plan)
    for note in notes:
        click.echo(f"baseline: {note}", err=True)
    chosen = get_backend(backend, **(settings or {}))
    run_id = new_run_id()
    run_dir = prepare_run_dir(out, run_id)
    options = RunOptions(run_dir=run_dir, run_id=run_id, jobs=jobs, gpu_fallback=gpu_fallback,
                         carried=carried or {}, repairs=repairs, wait=wait,
                         expected_durations=planning_durations(plan))
    finished: Finished | None = None
    try:
        # Azure ML runs every notebook at once, locally --jobs (default the CPU count) do.
        slots = len(plan.steps) if backend != "local" else jobs or os.cpu_count() or 1
        progress = make_progress(expected=options.expected_durations, slots=slots)
        finished = run_plan(chosen, plan, options, progress, devops=devops)
    finally:
        # Unlocked first: if the backend crashed and left the record "running", the report settles it as the
        # dead run it is (orchestrator/abandoned.py).
        release_run_dir(run_dir)
        # Even when the backend crashed, the report and the DevOps callback describe what finished. A job only
        # submitted (Azure ML without --wait) has nothing to report yet: its own reporting node will.
        if finished is None or finished.status != "submitted":
            if finished is not None:  # recorded before the report, so its trends include this run
                unrecorded = remember_run(run_dir)
                if unrecorded:
                    click.echo(f"warning: {unrecorded}", err=True)
            report_run(run_dir, devops, cancelled=finished is not None and finished.cancelled_by_devops)
    sys.exit(exit_code_for(finished.status))


def report_run(run_dir: Path, devops: DevOpsContext | None, *, cancelled: bool = False) -> None:
    """Rebuild junit.xml/report.html, then publish to DevOps when asked (never fails the notebooks' run)."""
    from orchestrator.report import build_report

    started = time.monotonic()
    files = build_report(run_dir)
    log.debug("report built in %.1fs", time.monotonic() - started)
    click.echo(f"results: {run_dir / 'results.json'}", err=True)
    click.echo(f"junit:   {files.junit}", err=True)
    click.echo(f"report:  {files.html}", err=True)
    if devops is None:
        return
    from orchestrator.devops import report_to_devops

    outcome = report_to_devops(run_dir, devops, result="canceled" if cancelled else None)
    for problem in outcome.all_problems:
        click.echo(f"devops: {problem}", err=True)
    echo_test_run(outcome.test_run, err=True)


def echo_test_run(test_run: TestRunOutcome | None, *, err: bool = False) -> None:
    if test_run is not None and test_run.run_id is not None:
        click.echo(f"devops: test run {test_run.run_id} {test_run.state}: {test_run.results} results, "
                   f"{test_run.attachments} attachments {test_run.url or ''}".rstrip(), err=err)
