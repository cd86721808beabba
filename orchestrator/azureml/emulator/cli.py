"""`orchestrator emulate PIPELINE.yml --out RUN_DIR`, and the `--emulate` switch of `run`/`rerun --backend azureml`.

Thin: load, submit to the emulated workspace, follow it with the same code as a real submission
(orchestrator.azureml.backend.follow), leave the run folder.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DIR = Path(".orchestrator") / "emulator"
POLL_S = 0.2  # the emulated service answers at once: no reason to poll every 30 s


def emulation_options(function: F) -> F:
    """--emulate, --assume, --emulator-dir (run and rerun with --backend azureml)."""
    for option in reversed([
        click.option("--emulate", is_flag=True,
                     help="azureml: submit to an emulated workspace that runs the job here (docs/azureml.md)."),
        click.option("--assume", multiple=True, metavar="NAME",
                     help="With --emulate: a pessimistic assumption (finalize-never, no-parent-tag, reused-hidden, "
                          "search-lag, defaults-hidden, all). Repeatable."),
        click.option("--emulator-dir", type=click.Path(path_type=Path),
                     help=f"With --emulate: the emulated workspace's folder (default: {DEFAULT_DIR})."),
    ]):  # fmt: skip
        function = option(function)
    return function


def check_emulation(emulate: bool, assume: tuple[str, ...], emulator_dir: Path | None, backend: str) -> None:
    """--emulate only with --backend azureml; --assume and --emulator-dir only with --emulate."""
    from orchestrator.errors import InvalidInputError, Problem

    if not emulate and (assume or emulator_dir is not None):
        raise InvalidInputError([Problem("--assume/--emulator-dir", "", "need --emulate")])
    if emulate and backend != "azureml":
        raise InvalidInputError([Problem("--emulate", backend, "needs --backend azureml")])


@contextlib.contextmanager
def emulated(emulate: bool, assume: tuple[str, ...], emulator_dir: Path | None, backend: str) -> Iterator[dict[str, Any]]:
    """With --emulate: the emulated workspace at the client seam for the command's life; yields the backend
    settings to add. The workspace lives in this process, so leaving waits for the jobs it runs."""
    check_emulation(emulate, assume, emulator_dir, backend)
    if not emulate:
        yield {}
        return
    from orchestrator.azureml.client import set_client_factory
    from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace

    workspace = EmulatedWorkspace(emulator_dir or DEFAULT_DIR, assumptions=Assumptions.parse(assume))
    previous = set_client_factory(workspace.factory)
    try:
        yield {"poll_s": POLL_S}
    finally:
        set_client_factory(previous)
        for name in list(workspace.states):
            workspace.wait(name)


def load_pipeline(path: Path) -> Any:
    """A compiled pipeline file, read with azure-ai-ml's own load_job; bad files are exit 2, not tracebacks."""
    from orchestrator.errors import InvalidInputError, Problem

    if not path.is_file():
        raise InvalidInputError([Problem(str(path), "", "no such pipeline file")])
    from azure.ai.ml import load_job

    try:
        job = load_job(path)
    except Exception as exc:  # noqa: BLE001 - yaml, schema and validation errors all mean a bad file
        raise InvalidInputError([Problem(str(path), "", f"not a pipeline job azure-ai-ml can load: {exc}")]) from None
    if getattr(job, "type", None) != "pipeline":
        raise InvalidInputError([Problem(str(path), "type", f"expected a pipeline job, found {getattr(job, 'type', '?')}")])
    return job


@click.command("emulate")
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The run folder to leave.")
@click.option("--assume", multiple=True, metavar="NAME",
              help="A pessimistic assumption (finalize-never, no-parent-tag, reused-hidden, search-lag, defaults-hidden, all). Repeatable.")
@click.option("--emulator-dir", type=click.Path(path_type=Path),
              help=f"The emulated workspace's folder (default: {DEFAULT_DIR}); keep it to reuse nodes across runs.")
def emulate_command(pipeline_file: Path, out: Path, assume: tuple[str, ...], emulator_dir: Path | None) -> None:
    """Run a compiled pipeline file (orchestrator compile --out) in an emulated Azure ML workspace, here."""
    from orchestrator.azureml.backend import follow
    from orchestrator.azureml.components import RUN_KEY
    from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace
    from orchestrator.azureml.rerun import expected_of, input_value
    from orchestrator.azureml.submit import submit_job
    from orchestrator.backends import RunOptions
    from orchestrator.errors import exit_code_for
    from orchestrator.progress import make_progress
    from orchestrator.report import build_report
    from orchestrator.run_folder import new_run_id, prepare_run_dir

    assumptions = Assumptions.parse(assume)
    job = load_pipeline(pipeline_file)
    expected = expected_of(job)
    workspace = EmulatedWorkspace(emulator_dir or DEFAULT_DIR, assumptions=assumptions)
    run_id = new_run_id()
    run_dir = prepare_run_dir(out, run_id)
    submitted = submit_job(workspace, job, key=f"emulate-{run_id}")
    if assumptions.names:
        click.echo(f"assuming: {', '.join(assumptions.names)}", err=True)
    outcome = follow(workspace, submitted, options=RunOptions(run_dir=run_dir, run_id=run_id, wait=True),
                     progress=make_progress(), expected=expected, title=str(job.experiment_name or "notebooks"),
                     run_key=str(input_value(job.inputs, RUN_KEY) or ""), poll_s=POLL_S)
    files = build_report(run_dir)  # junit.xml and report.html, as after a local run
    click.echo(f"results: {run_dir / 'results.json'}\nreport:  {files.html}", err=True)
    sys.exit(exit_code_for(outcome.status))
