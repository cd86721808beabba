"""`orchestrator handle` and `orchestrator worker` (docs/architecture.md#commands-and-exit-codes). Thin: build Services, call the handler or the
worker loop, translate the outcome into a message and an exit code.

`handle` exit codes: the message was handled: 0 (every notebook passed, or the pipeline was submitted), 1
(some notebook did not pass), 130 (the DevOps job was cancelled); the message was refused (it would be
dead-lettered): 2, or 3 when the refusal is an infrastructure one; a transient failure (it would be
redelivered): 3.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from orchestrator.cli.options import workspace_from, workspace_options

log = logging.getLogger("orchestrator.trigger")


@click.command("handle")
@click.argument("message_file", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["local", "azureml"]), default="local", show_default=True,
              help="local: fetch, run the notebooks here and report to DevOps; azureml: what the Function does.")
@click.option("--allow-local-repos", is_flag=True,
              help="Accept a local repository path (or file://) in the message: for demonstrations and tests.")
@click.option("--out", type=click.Path(path_type=Path), help="local: the run folder (default .orchestrator/runs/<run-id>).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="local: notebooks run at once (default: CPU count).")
@workspace_options
def handle_command(message_file: Path, backend: str, allow_local_repos: bool, out: Path | None, jobs: int | None,
                   subscription: str | None, resource_group: str | None, workspace: str | None,
                   workspace_config: Path | None) -> None:
    """Process one queue message (a message file, docs/architecture.md#queue-messages) as the Function would.

    MESSAGE_FILE `-` reads the message from standard input, so no file holding the job token need exist."""
    from orchestrator.progress import make_progress
    from orchestrator.trigger.handlers import handle
    from orchestrator.trigger.intake import RawMessage
    from orchestrator.trigger.services import Services
    from orchestrator.trigger.settings import TriggerSettings

    raw = RawMessage.from_stdin(sys.stdin.buffer) if str(message_file) == "-" else RawMessage.from_file(message_file)
    # One message, handled once: no queue will deliver it again, so a transient failure (a repository that
    # cannot be fetched, a service that does not answer) ends like the last delivery would: the DevOps job is
    # closed as failed with the reason, never left waiting.
    settings = dataclasses.replace(TriggerSettings.from_environ(), max_deliveries=1)
    services = Services(settings=settings, backend=backend, allow_local=allow_local_repos,
                        out=out, jobs=jobs, progress=make_progress() if backend == "local" else None,
                        workspace=workspace_from(subscription, resource_group, workspace, workspace_config)
                        if backend == "azureml" else None)
    trigger_log = logging.getLogger("orchestrator.trigger")
    trigger_log.addFilter(_drop_refusal_log)
    try:
        outcome = handle(raw, services)
    finally:
        trigger_log.removeFilter(_drop_refusal_log)
    if outcome.action == "complete":
        click.echo(f"handled: {outcome.detail}", err=True)
    else:
        label = "refused" if outcome.action == "dead_letter" else "not handled, try again"
        click.echo(f"{label}: {outcome.reason}", err=True)
        if outcome.description and outcome.description != outcome.reason:
            for line in outcome.description.split("; "):
                click.echo(f"  - {line}", err=True)
    sys.exit(outcome.exit_code)


def _drop_refusal_log(record: logging.LogRecord) -> bool:
    """`handle` prints a refusal itself, for a person; the service log line (for the Function and the worker)
    would say it twice."""
    return not str(record.msg).startswith("message=%s refused")


@click.command("worker")
@click.option("--max-messages", type=click.IntRange(min=1), help="Stop after this many messages (default: run until stopped).")
@workspace_options
def worker_command(max_messages: int | None, subscription: str | None, resource_group: str | None,
                   workspace: str | None, workspace_config: Path | None) -> None:
    """Receive kick_off and wrap_up messages from Service Bus until SIGTERM (a container's alternative to the Function)."""
    from orchestrator.trigger.handlers import handle
    from orchestrator.trigger.services import Services
    from orchestrator.trigger.settings import TriggerSettings
    from orchestrator.trigger.worker import run_worker

    from orchestrator.trigger.settings import startup_line

    logging.getLogger("orchestrator").setLevel(logging.INFO)  # a service's log is its lifecycle lines
    ready, line = startup_line("orchestrator worker",
                               workspace_given=any((subscription, resource_group, workspace, workspace_config)))
    (log.info if ready else log.error)(line)
    settings = TriggerSettings.from_environ()
    services = Services(settings=settings, backend="azureml",
                        workspace=workspace_from(subscription, resource_group, workspace, workspace_config))
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.warning("signal %s: stopping after the current message", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    handled = run_worker(settings, lambda raw: handle(raw, services), stop, max_messages)
    click.echo(f"worker stopped after {handled} messages", err=True)
