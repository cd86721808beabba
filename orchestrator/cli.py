"""The command line (DESIGN 6). Thin: parse, call one library function, translate the outcome.

Every user mistake becomes a clear message and exit code 2, never a traceback; this module is the one
place where exceptions turn into exit codes (reference/style.md, habit 1).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.azureml.commands import compile_command, schedule_command, workspace_from, workspace_options
from orchestrator.errors import (
    EXIT_INFRASTRUCTURE,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    EXIT_NOT_PASSED,
    EXIT_PASSED,
    InvalidInputError,
    OrchestratorError,
    Problem,
)
from orchestrator.trigger.commands import handle_command, worker_command

log = logging.getLogger("orchestrator")


def _parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """--param K=V; V is read as a YAML scalar so `epochs=2` is an int and `name='a b'` a string."""
    import yaml

    params: dict[str, Any] = {}
    problems = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip().isidentifier():
            problems.append(Problem("--param", raw, "expected NAME=VALUE with NAME a Python identifier"))
            continue
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            params[key.strip()] = value
    if problems:
        raise InvalidInputError(problems)
    return params


def _exit_code_for(status: str) -> int:
    # "submitted": an Azure ML run without --wait, handed over to the service.
    return {"passed": EXIT_PASSED, "submitted": EXIT_PASSED, "interrupted": EXIT_INTERRUPTED}.get(status, EXIT_NOT_PASSED)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name="orchestrator")
def cli(verbose: bool) -> None:
    """Run a repository of Jupyter notebooks as one pipeline: locally, or on Azure ML."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # The step result already says what nbclient would log (a dead kernel, a timeout).
        logging.getLogger("orchestrator.step.nbclient").setLevel(logging.CRITICAL)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), help="Plan file (default: PATH/orchestrator.yml).")
@click.option("--backend", default="local", show_default=True, help="Where to run: local or azureml.")
@click.option("--only", multiple=True, help="Run only notebooks matching this glob (and what they come after). Repeatable.")
@click.option("--param", "params", multiple=True, help="Set a notebook parameter, NAME=VALUE. Repeatable.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Notebooks run at once (default: CPU count).")
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default: .orchestrator/runs/<run-id>).")
@click.option("--gpu-fallback", type=click.Choice(["skip", "cpu"]), default="skip", show_default=True,
              help="What a GPU notebook does on a machine without GPUs.")
@click.option("--wait/--no-wait", default=True, help="azureml: wait for the pipeline and build the report.")
@click.option("--devops", is_flag=True, help="Report to Azure DevOps while running (agent job variables, or --callback).")
@click.option("--callback", "callback", type=click.Path(path_type=Path),
              help="With --devops: a queue message file (DESIGN 7) whose server job is closed when the run ends.")
@workspace_options
def run(path: Path, plan_file: Path | None, backend: str, only: tuple[str, ...], params: tuple[str, ...],
        jobs: int | None, out: Path | None, gpu_fallback: str, wait: bool, devops: bool,
        callback: Path | None, subscription: str | None, resource_group: str | None, workspace: str | None,
        workspace_config: Path | None) -> None:
    """Run the notebooks of PATH (a repository folder, a plan file, or one notebook)."""
    from orchestrator.plan import load_plan

    context = _devops_context(devops, callback)
    plan = load_plan(path, plan_file=plan_file, only=only, parameters=_parse_params(params))
    settings = {}
    if backend == "azureml":
        settings["workspace"] = workspace_from(subscription, resource_group, workspace, workspace_config)
    _execute(plan, backend=backend, out=out, jobs=jobs, gpu_fallback=gpu_fallback, wait=wait, devops=context,
             settings=settings)


def _devops_context(devops: bool, callback: Path | None) -> Any:
    """Where DevOps results go: the server job of a message file, or this agent job's variables."""
    if callback is not None and not devops:
        raise InvalidInputError([Problem("--callback", str(callback), "needs --devops")])
    if not devops:
        return None
    import os

    from orchestrator.devops import DevOpsContext, require_sdk

    require_sdk()  # a missing extra fails before any notebook runs
    if callback is not None:
        return DevOpsContext.from_message_file(callback)
    return DevOpsContext.from_environment(os.environ)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--failed", is_flag=True, help="Rerun only steps that did not pass (and steps after them).")
@click.option("--backend", type=click.Choice(["local", "azureml"]), default="local", show_default=True,
              help="azureml: RUN_DIR is the name of the pipeline job to rerun.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Notebooks run at once (default: CPU count).")
@click.option("--out", type=click.Path(path_type=Path), help="New run folder (default: .orchestrator/runs/<run-id>).")
@click.option("--gpu-fallback", type=click.Choice(["skip", "cpu"]), default="skip", show_default=True)
@click.option("--wait/--no-wait", default=False, help="azureml: follow the rerun and build its report.")
@workspace_options
def rerun(run_dir: Path, failed: bool, backend: str, jobs: int | None, out: Path | None, gpu_fallback: str,
          wait: bool, subscription: str | None, resource_group: str | None, workspace: str | None,
          workspace_config: Path | None) -> None:
    """Repair run: run RUN_DIR's pipeline again into a new run folder, keeping what passed with --failed.

    With --backend azureml, RUN_DIR names a pipeline job: it is resubmitted with the same run key, so Azure ML
    reuses the notebooks that completed and runs the rest again."""
    from orchestrator.rerun import plan_repair

    if backend == "azureml":
        from orchestrator.azureml.commands import rerun_azureml
        from orchestrator.run_folder import DEFAULT_RUNS_DIR, new_run_id

        folder = out or DEFAULT_RUNS_DIR / new_run_id()
        outcome = rerun_azureml(str(run_dir), failed=failed, wait=wait, out=folder,
                                workspace=workspace_from(subscription, resource_group, workspace, workspace_config))
        if outcome.status != "submitted":
            _report(folder.resolve(), None)
        sys.exit(_exit_code_for(outcome.status))

    repair = plan_repair(run_dir, failed_only=failed)
    if out is not None and out.resolve() == run_dir.resolve():
        raise InvalidInputError([Problem(str(out), "--out", "a repair run needs a new folder, not the run it repairs")])
    click.echo(f"repairing run {repair.repairs}: {len(repair.rerun)} to run, {len(repair.carried)} carried over", err=True)
    _execute(repair.plan, backend="local", out=out, jobs=jobs, gpu_fallback=gpu_fallback, wait=True,
             carried=repair.carried, repairs=repair.repairs)


def _execute(plan: Any, *, backend: str, out: Path | None, jobs: int | None, gpu_fallback: str, wait: bool,
             carried: dict[str, dict[str, Any]] | None = None, repairs: str | None = None,
             devops: Any = None, settings: dict[str, Any] | None = None) -> None:
    from orchestrator.backends import RunOptions, get_backend
    from orchestrator.progress import make_progress
    from orchestrator.run_folder import new_run_id, prepare_run_dir
    from orchestrator.running import Finished, run_plan

    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    chosen = get_backend(backend, **(settings or {}))
    run_id = new_run_id()
    run_dir = prepare_run_dir(out, run_id)
    options = RunOptions(run_dir=run_dir, run_id=run_id, jobs=jobs, gpu_fallback=gpu_fallback,
                         carried=carried or {}, repairs=repairs, wait=wait)
    finished: Finished | None = None
    try:
        finished = run_plan(chosen, plan, options, make_progress(), devops=devops)
    finally:
        # Even when the backend crashed, the report and the DevOps callback describe what finished. A job only
        # submitted (Azure ML without --wait) has nothing to report yet: its own reporting node will.
        if finished is None or finished.status != "submitted":
            _report(run_dir, devops, cancelled=finished is not None and finished.cancelled_by_devops)
    sys.exit(_exit_code_for(finished.status))


def _report(run_dir: Path, devops: Any, *, cancelled: bool = False) -> None:
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
    _echo_test_run(outcome.test_run, err=True)


def _echo_test_run(test_run: Any, *, err: bool = False) -> None:
    if test_run is not None and test_run.run_id is not None:
        click.echo(f"devops: test run {test_run.run_id} {test_run.state}: {test_run.results} results, "
                   f"{test_run.attachments} attachments {test_run.url or ''}".rstrip(), err=err)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), help="Plan file (default: PATH/orchestrator.yml).")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved plan as JSON.")
def validate(path: Path, plan_file: Path | None, as_json: bool) -> None:
    """Check the plan and notebooks without running anything; report every problem at once."""
    from orchestrator.plan import validate_plan

    plan = validate_plan(path, plan_file=plan_file)
    if as_json:
        click.echo(json.dumps(plan.to_json(), indent=2))
        return
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    source = plan.plan_file or plan.root
    click.echo(f"{source}: ok, {len(plan.steps)} notebooks")
    for step in plan.steps:
        extras = [f"target={step.target}"]
        if step.after:
            extras.append("after=" + ",".join(step.after))
        if step.skip is not None:
            extras.append(f"skip={step.skip!r}")
        click.echo(f"  {step.notebook}  [{step.id}] " + " ".join(extras))


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--devops", is_flag=True, help="Publish the run to Azure DevOps as a test run (agent job variables, or --callback).")
@click.option("--callback", type=click.Path(path_type=Path),
              help="With --devops: also close the server job whose properties this message file (DESIGN 7) holds.")
def report(run_dir: Path, devops: bool, callback: Path | None) -> None:
    """Rebuild junit.xml, report.html and the notebooks' HTML from RUN_DIR/results.json; optionally publish."""
    from orchestrator.report import build_report
    from orchestrator.results import load_results

    load_results(run_dir)  # a clear error when RUN_DIR is not a run folder
    context = _devops_context(devops, callback)
    files = build_report(run_dir)
    click.echo(f"junit:  {files.junit}")
    click.echo(f"report: {files.html}")
    if context is None:
        return
    from orchestrator.devops import report_to_devops

    outcome = report_to_devops(run_dir, context)
    _echo_test_run(outcome.test_run)
    for problem in outcome.all_problems:
        click.echo(f"devops: {problem}", err=True)
    if not outcome.ok:
        sys.exit(EXIT_INFRASTRUCTURE)


cli.add_command(compile_command)
cli.add_command(schedule_command)
cli.add_command(handle_command)
cli.add_command(worker_command)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of orchestrator.yml (for editor completion)."""
    from orchestrator.plan import plan_json_schema

    click.echo(json.dumps(plan_json_schema(), indent=2))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one place exceptions become exit codes and messages."""
    try:
        code = cli.main(args=argv, prog_name="orchestrator", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_INVALID_INPUT if exc.exit_code == 2 else exc.exit_code)
    except OrchestratorError as exc:
        label = "invalid input" if isinstance(exc, InvalidInputError) else "error"
        click.echo(f"{label}:\n{exc}" if "\n" in str(exc) else f"{label}: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_PASSED)


if __name__ == "__main__":
    main()
