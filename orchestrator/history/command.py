"""`orchestrator history [PATH]` (show) and `orchestrator history import RUN_DIR...`.

Thin: parse, query the store, print. `history PATH` without a sub-command shows, so the everyday form stays
short; `import` is the one sub-command.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.history.record import run_from_folder
from orchestrator.history.store import HistoryStore, PastRun
from orchestrator.plan.paths import glob_regex, inside_root

DEFAULT_LAST = 5


class _ShowByDefault(click.Group):
    """A group whose first argument is PATH unless it names a sub-command: `history examples` shows."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not any(arg in ("-h", "--help") for arg in args[:1]) and (not args or args[0] not in self.commands):
            args = ["show", *args]
        return super().parse_args(ctx, args)


def _store_option(function: Any) -> Any:
    return click.option("--history", "history_file", type=click.Path(path_type=Path),
                        help="History file (default: $ORCHESTRATOR_HISTORY or .orchestrator/history.sqlite).")(function)


@click.group("history", cls=_ShowByDefault)
def history_command() -> None:
    """Past runs per notebook: status, duration, attempts, metrics, commit and branch.

    `orchestrator history [PATH]` shows them (PATH: a plan folder or plan file; default: every project in the
    history); `orchestrator history import RUN_DIR...` adds runs from older run folders."""


@history_command.command("show")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--notebook", "patterns", multiple=True, help="Only notebooks matching this glob. Repeatable.")
@click.option("--last", type=click.IntRange(min=1), default=DEFAULT_LAST, show_default=True,
              help="Runs shown per notebook, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_store_option
def show(path: Path | None, patterns: tuple[str, ...], last: int, as_json: bool, history_file: Path | None) -> None:
    """Show the last runs of each notebook."""
    store = HistoryStore(history_file)
    root = str(_plan_root(path)) if path is not None else None
    found = store.notebook_history(root=root, last=last)
    found = {notebook: runs for notebook, runs in found.items() if _matches(notebook, patterns)}
    if as_json:
        click.echo(json.dumps([{"notebook": nb, "runs": [_run_json(run) for run in runs]}
                               for nb, runs in sorted(found.items())], indent=2))
        return
    if not found:
        where = f" for {root}" if root else ""
        click.echo(f"no runs in the history{where} ({store.path})", err=True)
        return
    for notebook, runs in sorted(found.items()):
        click.echo(_heading(notebook, runs))
        for run in runs:
            click.echo("  " + _row(run))


@history_command.command("import")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@_store_option
def import_runs(run_dirs: tuple[Path, ...], history_file: Path | None) -> None:
    """Add the runs in RUN_DIRS (run folders of earlier versions, other machines) to the history."""
    store = HistoryStore(history_file)
    problems: list[Problem] = []
    for run_dir in run_dirs:
        try:
            run = run_from_folder(run_dir)
        except InvalidInputError as error:
            problems.extend(error.problems)
            continue
        store.record(run)
        click.echo(f"imported {run.run_id}: {len(run.notebooks)} notebooks, {run.status} ({run_dir})")
    if problems:
        raise InvalidInputError(problems)


@history_command.command("import-mlflow")
@click.argument("experiment")
@click.option("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI). For Azure ML: "
              "`az ml workspace show --query mlflow_tracking_uri`, with azureml-mlflow installed.")
@click.option("--root", "path", type=click.Path(path_type=Path), default=".", show_default=True,
              help="The plan folder these runs belong to, as a local run of it records it.")
@_store_option
def import_mlflow(experiment: str, tracking_uri: str | None, path: Path, history_file: Path | None) -> None:
    """Add Azure ML runs of EXPERIMENT to the history, read from what their notebook nodes logged to MLflow."""
    from orchestrator.history.mlflow_import import runs_from_mlflow

    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InvalidInputError([Problem("mlflow", "", "not installed: pip install -e '.[azureml]'")]) from None
    store = HistoryStore(history_file)
    runs = runs_from_mlflow(MlflowClient(tracking_uri=tracking_uri), experiment, root=str(_plan_root(path)))
    for run in runs:
        store.record(run)
        click.echo(f"imported {run.run_id}: {len(run.notebooks)} notebooks, {run.status}")
    if not runs:
        click.echo(f"no pipeline runs with notebook runs in experiment {experiment}", err=True)


def _plan_root(path: Path) -> Path:
    """The folder a run records as its root: PATH itself, or the folder of a plan file or notebook."""
    if not path.exists():
        raise InvalidInputError([Problem(str(path), "", "no such file or folder")])
    return path.resolve() if path.is_dir() else path.resolve().parent


def _matches(notebook: str, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return True
    problems = []
    for pattern in patterns:
        try:
            if glob_regex(inside_root(pattern)).fullmatch(notebook):
                return True
        except ValueError as error:
            problems.append(Problem("--notebook", repr(pattern), str(error)))
    if problems:
        raise InvalidInputError(problems)
    return False


def _heading(notebook: str, runs: list[PastRun]) -> str:
    seconds = [r.record.duration_s for r in runs if r.record.duration_s is not None and r.record.status != "skipped"]
    passed = sum(r.record.status == "passed" for r in runs)
    median = f", median {format_seconds(statistics.median(seconds))}" if seconds else ""
    return f"{notebook}  ({passed}/{len(runs)} passed{median})"


def _row(run: PastRun) -> str:
    record = run.record
    code = f"{run.branch or '-'}@{run.commit[:8]}" if run.commit else (run.branch or "-")
    seconds = format_seconds(record.duration_s) if record.duration_s is not None else "-"
    retries = f" attempts={record.attempts}" if record.attempts > 1 else ""
    metrics = " ".join(f"{name}={value:.4g}" for name, value in sorted(record.metrics.items()))
    when = run.started_at[:16].replace("T", " ")
    return f"{when}  {run.run_id:<24} {code:<22} {run.backend:<8} {record.status:<9} {seconds:>8}{retries}  {metrics}".rstrip()


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _run_json(run: PastRun) -> dict[str, Any]:
    data = asdict(run)
    record = data.pop("record")
    return {**data, **record}
