"""The command group and the console entry point.

Commands are listed here by name and imported when click asks for one (`orchestrator run` imports the run
commands only), so `orchestrator --help` and `import orchestrator.cli` stay light, and the command modules
may import `orchestrator.cli.options` without an import circle.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading

import click

from orchestrator.errors import DISTRIBUTION, EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_PASSED, InvalidInputError, OrchestratorError

# command name -> ("module:attribute" of its click command, the first sentence of its help). A new command is one
# line here. The sentence is what `orchestrator --help` lists, so listing the commands imports none of them
# (tests/test_cli_structure.py checks each against its command's own help).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("orchestrator.cli.run:run",
            "Run the notebooks of PATH (a repository folder, a plan file, or one notebook)."),
    "rerun": ("orchestrator.cli.run:rerun",
              "Repair run: run RUN_DIR's pipeline again into a new run folder, keeping what passed with --failed."),
    "validate": ("orchestrator.cli.inspect:validate",
                 "Check the plan and notebooks without running anything; report every problem at once."),
    "report": ("orchestrator.cli.inspect:report",
               "Rebuild junit.xml, report.html and the notebooks' HTML from RUN_DIR/results.json; optionally publish."),
    "schema": ("orchestrator.cli.inspect:schema", "Print the JSON Schema of orchestrator.yml (for editor completion)."),
    "compile": ("orchestrator.azureml.commands:compile_command",
                "Compile the notebooks of PATH into an Azure ML pipeline job (YAML), offline, and validate it."),
    "schedule": ("orchestrator.azureml.commands:schedule_command",
                 "Create (or update) an Azure ML schedule running the notebooks of PATH; each run gets a fresh run_key."),
    "publish": ("orchestrator.azureml.commands:publish_command",
                "Publish the notebooks of PATH as an Azure ML batch endpoint (a pipeline-component deployment) to invoke "
                "or schedule."),
    "emulate": ("orchestrator.azureml.emulator.cli:emulate_command",
                "Run a compiled pipeline file (orchestrator compile --out) in an emulated Azure ML workspace, here."),
    "handle": ("orchestrator.trigger.commands:handle_command",
               "Process one queue message (a message file, docs/architecture.md#queue-messages) as the Function would."),
    "worker": ("orchestrator.trigger.commands:worker_command",
               "Receive kick_off and wrap_up messages from Service Bus until SIGTERM (a container's alternative to the "
               "Function)."),
    "history": ("orchestrator.history.command:history_command",
                "Past runs per notebook: status, duration, attempts, metrics, commit and branch."),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use, from COMMANDS."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        target = COMMANDS[cmd_name][0]
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, from COMMANDS' sentences: importing every command module to read its help cost
        about 1 s (plan models, the emulator...), more than everything else `--help` does."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in COMMANDS:
                rows.append((name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit)))
            else:
                command = super().get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.version_option(package_name=DISTRIBUTION)
def cli(verbose: bool) -> None:
    """Run a repository of Jupyter notebooks as one pipeline: locally, or on Azure ML."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # The step result already says what nbclient would log (a dead kernel, a timeout).
        logging.getLogger("orchestrator.step.nbclient").setLevel(logging.CRITICAL)
        from orchestrator.azureml.sdk import quiet_sdk_notices

        quiet_sdk_notices()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one place exceptions become exit codes and messages.

    As the `orchestrator` command (no argv given), the process then ends without tearing the interpreter down:
    every file of the run is written and closed by then, and undoing a few thousand modules one by one took a
    quarter of a second of every command (measured on a one-notebook run; docs/step-runner.md, "Fixed cost of
    a run")."""
    try:
        _main(argv)
    except SystemExit as done:
        if argv is not None or any(thread.is_alive() and not thread.daemon
                                   for thread in threading.enumerate() if thread is not threading.main_thread()):
            raise  # called in-process (tests), or a thread still works: the ordinary exit, which waits for it
        _leave(done.code)


def _leave(code: object) -> None:
    """Exit with `code` as SystemExit would, after atexit handlers (logging's flush among them) and stdio."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # what the interpreter's own exit runs first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or the reader is gone: 120, as the interpreter's exit says it
            code = code or 120
    os._exit(code or 0)


def _main(argv: list[str] | None) -> None:
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
