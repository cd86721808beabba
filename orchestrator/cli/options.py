"""Options that several commands share, declared once: plan selection, --param, the workspace, DevOps.

Importing this module imports click and nothing heavy; the Azure ML and trigger command modules use it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from orchestrator.errors import InvalidInputError, Problem

if TYPE_CHECKING:
    from orchestrator.azureml.client import WorkspaceOptions
    from orchestrator.devops.context import DevOpsContext
    from orchestrator.plan.spec import ResolvedPlan

F = TypeVar("F", bound=Callable[..., Any])

# The typing rule itself is orchestrator/plan/cli_params.py (not imported here: it loads the plan models).
PARAM_HELP = (
    "Set a notebook parameter, NAME=VALUE; repeatable, the last one wins. Typed like papermill's -p: "
    "True, False and None are those values, text Python reads as an int or a float is that number "
    "(0123 is 123, 1e3 is 1000.0), anything else is a string (yes, null, 2026-01-01)."
)


def _apply(function: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        function = option(function)
    return function


def plan_options(function: F) -> F:
    """PATH, --plan, --only, --param: which notebooks, with which parameters (`load_from_options`)."""
    return _apply(function, [
        click.argument("path", type=click.Path(path_type=Path), default="."),
        click.option("--plan", "plan_file", type=click.Path(path_type=Path),
                     help="Plan file (default: PATH/orchestrator.yml)."),
        click.option("--only", multiple=True,
                     help="Only notebooks matching this glob (and what they come after). Repeatable."),
        click.option("--param", "params", multiple=True, help=PARAM_HELP),
    ])


def changed_since_option(function: F) -> F:
    """--changed-since REF: only the notebooks the change since REF can affect (orchestrator.changes)."""
    return click.option("--changed-since", "changed_since", metavar="REF",
                        help="Only notebooks the change since REF (its merge base with HEAD) can affect; "
                             "the others are skipped as 'unchanged since REF'.")(function)


def load_from_options(path: Path, plan_file: Path | None, only: tuple[str, ...],
                      params: tuple[str, ...]) -> ResolvedPlan:
    """The plan `plan_options` select (imports the plan model only now)."""
    from orchestrator.plan import load_plan

    return load_plan(path, plan_file=plan_file, only=only, parameters=parse_params(params))


def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """--param NAME=VALUE, typed as papermill's -p (orchestrator/plan/cli_params.py)."""
    from orchestrator.plan.cli_params import parse_cli_parameters

    return parse_cli_parameters(values)


def local_run_options(function: F) -> F:
    """--jobs, --out, --gpu-fallback: how a local run uses this machine and where it writes."""
    return _apply(function, [
        click.option("--jobs", "-j", type=click.IntRange(min=1), help="Notebooks run at once (default: CPU count)."),
        click.option("--out", type=click.Path(path_type=Path),
                     help="Run folder (default: .orchestrator/runs/<run-id>)."),
        click.option("--gpu-fallback", type=click.Choice(["skip", "cpu"]), default="skip", show_default=True,
                     help="What a GPU notebook does on a machine without GPUs."),
    ])


def workspace_options(function: F) -> F:
    """--subscription, --resource-group, --workspace, --workspace-config (see orchestrator.azureml.client)."""
    return _apply(function, [
        click.option("--subscription", help="Azure subscription id (default: AZUREML_ARM_SUBSCRIPTION, "
                     "AZURE_SUBSCRIPTION_ID or config.json)."),
        click.option("--resource-group", help="Resource group of the workspace (default: environment or config.json)."),
        click.option("--workspace", help="Azure ML workspace name (default: environment or config.json)."),
        click.option("--workspace-config", type=click.Path(path_type=Path),
                     help="A workspace config.json, or a folder to search from (default: the current folder up)."),
    ])


def workspace_from(subscription: str | None, resource_group: str | None, workspace: str | None,
                   workspace_config: Path | None) -> WorkspaceOptions:
    from orchestrator.azureml.client import WorkspaceOptions

    return WorkspaceOptions(subscription_id=subscription, resource_group=resource_group, workspace_name=workspace,
                            config=workspace_config)


def devops_options(action: str) -> Callable[[F], F]:
    """--devops and --callback; `action` says what --devops does for this command."""

    def decorate(function: F) -> F:
        return _apply(function, [
            click.option("--devops", is_flag=True, help=f"{action} (agent job variables, or --callback)."),
            click.option("--callback", type=click.Path(path_type=Path),
                         help="With --devops: a queue message file (docs/architecture.md#queue-messages) whose "
                              "server job is closed when the run ends."),
        ])

    return decorate


def devops_context(devops: bool, callback: Path | None) -> DevOpsContext | None:
    """Where DevOps results go: the server job of a message file, or this agent job's variables."""
    if callback is not None and not devops:
        raise InvalidInputError([Problem("--callback", str(callback), "needs --devops")])
    if not devops:
        return None
    import os

    from orchestrator.devops.context import DevOpsContext
    from orchestrator.devops.testrun import require_sdk

    require_sdk()  # a missing extra fails before any notebook runs
    if callback is not None:
        return DevOpsContext.from_message_file(callback)
    return DevOpsContext.from_environment(os.environ)
