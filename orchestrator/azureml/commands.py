"""Click commands of the Azure ML backend, listed in orchestrator/cli/main.py: `compile`, `schedule`, `publish`, and
`rerun_azureml` for `orchestrator rerun --backend azureml JOB_NAME`.

Thin: parse, call the library, print the outcome. Importing this module imports no Azure SDK and no plan
model; errors become exit codes in orchestrator.cli.main.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.options import load_from_options, plan_options, workspace_from, workspace_options

if TYPE_CHECKING:
    from orchestrator.azureml.client import WorkspaceOptions
    from orchestrator.backends import RunOutcome
    from orchestrator.plan.spec import ResolvedPlan

# Where compile and schedule stage the code snapshots they upload.
snapshots_option = click.option(
    "--snapshots", type=click.Path(path_type=Path),
    help="Folder for the staged code snapshots (default: <repository>/.orchestrator/azureml/snapshots).")


def _summary(job: Any) -> str:
    from orchestrator.azureml.compile import REPORT_NODE

    nodes = {name: node for name, node in job.jobs.items() if name != REPORT_NODE}
    computes = Counter(str(node.compute) for node in nodes.values())
    environments = {id(node.component.environment) for node in job.jobs.values()}
    shown = ", ".join(f"{name} x{count}" for name, count in computes.most_common())
    return (f"{len(nodes)} notebook nodes + report, {len(environments)} environment(s); compute: {shown or 'none'}; "
            f"experiment {job.experiment_name}")


def _plan_with_history(plan: ResolvedPlan) -> tuple[ResolvedPlan, dict[str, float]]:
    """What the run history adds to a plan compiled here: expectations relative to the baseline made absolute
    (docs/history.md) and expected durations, which decide what is packed per node."""
    from orchestrator.history import planning_durations
    from orchestrator.history.baselines import resolve_baselines

    plan, notes = resolve_baselines(plan)
    for note in notes:
        click.echo(f"baseline: {note}", err=True)
    return plan, planning_durations(plan)


@click.command("compile")
@plan_options
@snapshots_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where to write the pipeline job YAML.")
@click.option("--run-key", default="manual", show_default=True,
              help="The run_key input: the same key lets Azure ML reuse completed notebooks.")
def compile_command(path: Path, plan_file: Path | None, only: tuple[str, ...], params: tuple[str, ...],
                    snapshots: Path | None, out: Path, run_key: str) -> None:
    """Compile the notebooks of PATH into an Azure ML pipeline job (YAML), offline, and validate it."""
    from orchestrator.azureml.compile import CompileOptions, compile_pipeline
    from orchestrator.azureml.validation import validate
    from orchestrator.azureml.export import write_pipeline

    plan, durations = _plan_with_history(load_from_options(path, plan_file, only, params))
    started = time.perf_counter()
    result = compile_pipeline(plan, CompileOptions(run_key=run_key, cache_dir=snapshots, expected_durations=durations))
    job = result.job
    compiled = time.perf_counter()
    validate(job)
    validated = time.perf_counter()
    write_pipeline(job, out, source=str(plan.plan_file or plan.root))
    click.echo(f"{out}: {_summary(job)}")
    click.echo(result.packing.summary())
    click.echo(f"compiled in {compiled - started:.2f}s, validated (azure-ai-ml's checks) in {validated - compiled:.2f}s", err=True)


@click.command("schedule")
@plan_options
@snapshots_option
@click.option("--cron", required=True, help="Cron expression: minute hour day month day-of-week, e.g. '0 2 * * *'.")
@click.option("--name", help="Schedule name (default: <experiment>-schedule); an existing one is updated.")
@click.option("--time-zone", default="UTC", show_default=True, help="Time zone of the cron expression.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the schedule as YAML here instead of creating it (nothing is sent to Azure).")
@workspace_options
def schedule_command(path: Path, plan_file: Path | None, only: tuple[str, ...], params: tuple[str, ...],
                     snapshots: Path | None, cron: str,
                     name: str | None, time_zone: str, out: Path | None, subscription: str | None,
                     resource_group: str | None, workspace: str | None, workspace_config: Path | None) -> None:
    """Create (or update) an Azure ML schedule running the notebooks of PATH; each run gets a fresh run_key."""
    from orchestrator.azureml import schedule as schedules
    from orchestrator.azureml.client import get_client
    from orchestrator.azureml.compile import CompileOptions, compile_plan
    from orchestrator.azureml.export import write_schedule
    from orchestrator.azureml.submit import azure_errors

    plan, durations = _plan_with_history(load_from_options(path, plan_file, only, params))
    job = compile_plan(plan, CompileOptions(run_key=schedules.TRIGGER_TIME, cache_dir=snapshots,
                                            expected_durations=durations))
    schedule = schedules.build_schedule(job, cron=cron, name=schedules.schedule_name(name, plan.experiment),
                                        time_zone=time_zone)
    schedules.validate_schedule(schedule)
    if out is not None:
        pipeline = write_schedule(schedule, out, source=str(plan.plan_file or plan.root))
        click.echo(f"{out} (+ {pipeline.name}): schedule {schedule.name} ({cron}, {time_zone}); {_summary(job)}")
        return
    client = get_client(workspace_from(subscription, resource_group, workspace, workspace_config))
    with azure_errors(f"creating schedule {schedule.name}"):
        created = schedules.create(client, schedule)
    click.echo(f"schedule {getattr(created, 'name', schedule.name)} created: '{cron}' ({time_zone}); {_summary(job)}")


@click.command("publish")
@plan_options
@snapshots_option
@click.option("--endpoint", help="Batch endpoint name (3-32 letters, digits and -, a letter first); created if absent.")
@click.option("--deployment", help="Deployment name on the endpoint (default: notebooks); made the endpoint's default.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Write endpoint.yml, deployment.yml and component.yml here instead (nothing is sent to Azure).")
@workspace_options
def publish_command(path: Path, plan_file: Path | None, only: tuple[str, ...], params: tuple[str, ...],
                    snapshots: Path | None, endpoint: str | None, deployment: str | None, out: Path | None,
                    subscription: str | None, resource_group: str | None, workspace: str | None,
                    workspace_config: Path | None) -> None:
    """Publish the notebooks of PATH as an Azure ML batch endpoint (a pipeline-component deployment) to invoke or schedule."""
    from orchestrator.azureml import publish
    from orchestrator.azureml.client import get_client
    from orchestrator.azureml.compile import CompileOptions, compile_plan
    from orchestrator.azureml.submit import azure_errors
    from orchestrator.errors import InvalidInputError, Problem

    if not endpoint:
        what = "--deployment names a deployment of a batch endpoint: " if deployment else ""
        raise InvalidInputError([Problem("--endpoint", "", f"{what}give the endpoint with --endpoint NAME")])
    publish.check_name(endpoint, "--endpoint")
    deployment = publish.check_name(deployment or publish.DEFAULT_DEPLOYMENT, "--deployment", deployment=True)
    plan, durations = _plan_with_history(load_from_options(path, plan_file, only, params))
    job = compile_plan(plan, CompileOptions(cache_dir=snapshots, expected_durations=durations))
    publication = publish.build(job, endpoint=endpoint, deployment=deployment)
    publish.validate(publication)
    if out is not None:
        try:
            publish.write(publication, out, source=str(plan.plan_file or plan.root))
        except OSError as exc:
            raise InvalidInputError([Problem("--out", str(out), f"cannot write the YAML files there: {exc}")]) from None
        with azure_errors(f"reading {out} back with azure-ai-ml's loaders"):
            publish.load(out)  # what `az ml batch-endpoint/batch-deployment create --file` will read
        click.echo(f"{out}: {', '.join(publish.FILES)}: {publication.describe()}")
        return
    client = get_client(workspace_from(subscription, resource_group, workspace, workspace_config))
    with azure_errors(f"publishing batch endpoint {endpoint}"):
        publish.create(client, publication)
    click.echo(f"published {publication.describe()}; invoke with a run_key input (docs/azureml.md#pipeline-endpoint)")


def rerun_azureml(job_name: str, *, failed: bool, wait: bool = False, out: Path | None = None,
                  workspace: WorkspaceOptions | None = None, key: str | None = None,
                  poll_s: float | None = None) -> RunOutcome:
    """`orchestrator rerun --backend azureml JOB_NAME [--failed]`: resubmit the job's graph.

    With --failed the original run_key is kept, so Azure ML reuses every notebook that completed and runs the
    rest again. With wait, follows the new job and leaves the run folder in `out` (as `run --wait` does).
    """
    from orchestrator.azureml.backend import follow
    from orchestrator.azureml.client import get_client
    from orchestrator.azureml.rerun import rerun_job
    from orchestrator.azureml.watch import POLL_S
    from orchestrator.backends import RunOptions
    from orchestrator.progress import make_progress
    from orchestrator.run_folder import new_run_id, prepare_run_dir

    client = get_client(workspace)
    submitted, run_key, expected = rerun_job(client, job_name, failed=failed, key=key)
    click.echo(f"rerun of {job_name}: job {submitted.name} (run_key {run_key}"
               f"{', completed notebooks reused' if failed else ', everything runs'})", err=True)
    run_id = new_run_id()
    run_dir = prepare_run_dir(out, run_id)
    options = RunOptions(run_dir=run_dir, run_id=run_id, wait=wait, repairs=job_name)
    title = str(getattr(submitted.job, "experiment_name", None) or job_name)
    return follow(client, submitted, options=options, progress=make_progress(), expected=expected, title=title,
                  run_key=run_key, poll_s=POLL_S if poll_s is None else poll_s)
