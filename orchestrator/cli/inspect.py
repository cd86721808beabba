"""`orchestrator validate`, `schema` and `report`: read a plan or a run folder, run nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from orchestrator.cli.options import changed_since_option, devops_context, devops_options
from orchestrator.errors import EXIT_INFRASTRUCTURE


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--plan", "plan_file", type=click.Path(path_type=Path), help="Plan file (default: PATH/orchestrator.yml).")
@click.option("--json", "as_json", is_flag=True, help="Print the resolved plan (or the selection) as JSON.")
@changed_since_option
def validate(path: Path, plan_file: Path | None, as_json: bool, changed_since: str | None) -> None:
    """Check the plan and notebooks without running anything; report every problem at once.

    With --changed-since REF, print which notebooks the change since REF selects, and why."""
    from orchestrator.plan import validate_plan

    plan = validate_plan(path, plan_file=plan_file)
    if as_json and changed_since is None:
        click.echo(json.dumps(plan.to_json(), indent=2))
        return
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    if changed_since is not None:
        from orchestrator.changes import select_changed

        selection = select_changed(plan, changed_since, path=path, plan_file=plan_file)
        click.echo(json.dumps(selection.to_json(), indent=2) if as_json else "\n".join(selection.lines()))
        return
    source = plan.plan_file or plan.root
    click.echo(f"{source}: ok, {len(plan.steps)} notebooks")
    for step in plan.steps:
        extras = [f"target={step.target}"]
        if step.after:
            extras.append("after=" + ",".join(step.after))
        if step.skip is not None:
            extras.append(f"skip={step.skip!r}")
        click.echo(f"  {step.notebook}  [{step.id}] " + " ".join(extras))


@click.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@devops_options("Publish the run to Azure DevOps as a test run")
def report(run_dir: Path, devops: bool, callback: Path | None) -> None:
    """Rebuild junit.xml, report.html and the notebooks' HTML from RUN_DIR/results.json; optionally publish."""
    from orchestrator.cli.run import echo_test_run
    from orchestrator.report import build_report
    from orchestrator.results import load_results

    load_results(run_dir)  # a clear error when RUN_DIR is not a run folder
    context = devops_context(devops, callback)
    files = build_report(run_dir)
    click.echo(f"junit:  {files.junit}")
    click.echo(f"report: {files.html}")
    if context is None:
        return
    from orchestrator.devops import report_to_devops

    outcome = report_to_devops(run_dir, context)
    echo_test_run(outcome.test_run)
    for problem in outcome.all_problems:
        click.echo(f"devops: {problem}", err=True)
    if not outcome.ok:
        sys.exit(EXIT_INFRASTRUCTURE)


@click.command()
def schema() -> None:
    """Print the JSON Schema of orchestrator.yml (for editor completion)."""
    from orchestrator.plan import plan_json_schema

    click.echo(json.dumps(plan_json_schema(), indent=2))
