"""The command group and the console entry point.

Commands are listed here by name and imported when click asks for one (`orchestrator run` imports the run
commands only), so `orchestrator --help` and `import orchestrator.cli` stay light, and the command modules
may import `orchestrator.cli.options` without an import circle.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from orchestrator.errors import DISTRIBUTION, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_PASSED, InvalidInputError, OrchestratorError

# command name -> "module:attribute" of its click command. A new command is one line here.
COMMANDS: dict[str, str] = {
    "run": "orchestrator.cli.run:run",
    "rerun": "orchestrator.cli.run:rerun",
    "validate": "orchestrator.cli.inspect:validate",
    "report": "orchestrator.cli.inspect:report",
    "schema": "orchestrator.cli.inspect:schema",
    "compile": "orchestrator.azureml.commands:compile_command",
    "schedule": "orchestrator.azureml.commands:schedule_command",
    "emulate": "orchestrator.azureml.emulator.cli:emulate_command",
    "handle": "orchestrator.trigger.commands:handle_command",
    "worker": "orchestrator.trigger.commands:worker_command",
    "history": "orchestrator.history.command:history_command",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use, from COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name=DISTRIBUTION)
def cli(verbose: bool) -> None:
    """Run a repository of Jupyter notebooks as one pipeline: locally, or on Azure ML."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # The step result already says what nbclient would log (a dead kernel, a timeout).
        logging.getLogger("orchestrator.step.nbclient").setLevel(logging.CRITICAL)


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
