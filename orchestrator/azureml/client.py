"""The one place an Azure ML client is made (docs/architecture.md#one-client-factory), and where the workspace comes from.

Tests replace the factory with a fake (`set_client_factory`), so nothing in the test suite can reach Azure.

The workspace is resolved the way Azure ML users expect, each setting from the first source that has it:
1. the command line: --subscription, --resource-group, --workspace;
2. environment variables: the ones Azure ML sets inside jobs (AZUREML_ARM_SUBSCRIPTION,
   AZUREML_ARM_RESOURCEGROUP, AZUREML_ARM_WORKSPACE_NAME), then the common Azure ones (AZURE_SUBSCRIPTION_ID,
   AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME);
3. a config.json as downloaded from the portal, found like `MLClient.from_config` does: the given file, or
   `config.json` / `.azureml/config.json` in the current folder or any folder above it.
Credentials: DefaultAzureCredential (environment, managed identity, Azure CLI login, ...).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from orchestrator.azureml.sdk import require
from orchestrator.errors import InvalidInputError, Problem
from orchestrator.seam import Seam

# Setting -> environment variables read for it, in order (declared once, here; docs/architecture.md#settings-declared-once).
ENVIRONMENT_VARIABLES: dict[str, tuple[str, ...]] = {
    "subscription_id": ("AZUREML_ARM_SUBSCRIPTION", "AZURE_SUBSCRIPTION_ID"),
    "resource_group": ("AZUREML_ARM_RESOURCEGROUP", "AZURE_RESOURCE_GROUP", "AZUREML_RESOURCE_GROUP"),
    "workspace_name": ("AZUREML_ARM_WORKSPACE_NAME", "AZUREML_WORKSPACE_NAME", "AZURE_ML_WORKSPACE"),
}
OPTIONS = {"subscription_id": "--subscription", "resource_group": "--resource-group", "workspace_name": "--workspace"}
CONFIG_NAMES = ("config.json", ".azureml/config.json")


@dataclass(frozen=True)
class WorkspaceOptions:
    """What the user gave on the command line (all optional)."""

    subscription_id: str | None = None
    resource_group: str | None = None
    workspace_name: str | None = None
    config: Path | None = None  # a config.json, or a folder to start searching from


@dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    workspace_name: str
    source: str  # where the settings came from, for messages


def find_config(start: Path | None) -> Path | None:
    if start is not None and start.is_file():
        return start
    folder = (start or Path.cwd()).resolve()
    for candidate_dir in (folder, *folder.parents):
        for name in CONFIG_NAMES:
            if (candidate_dir / name).is_file():
                return candidate_dir / name
    return None


def _read_config(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError([Problem(str(path), "", f"cannot be read as a workspace config.json ({exc})")]) from None
    if not isinstance(data, dict):
        raise InvalidInputError([Problem(str(path), "", "expected a JSON object")])
    # The portal's file says workspace_name; older ones say workspace.
    names = {"subscription_id": ("subscription_id",), "resource_group": ("resource_group",),
             "workspace_name": ("workspace_name", "workspace")}
    return {key: str(data[k]) for key, keys in names.items() for k in keys if data.get(k)}


def resolve_workspace(options: WorkspaceOptions, environ: Mapping[str, str] | None = None) -> Workspace:
    """The workspace to use, or InvalidInputError naming each missing setting and how to give it."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    sources: list[str] = []
    for key in OPTIONS:
        given = getattr(options, key)
        if given:
            values[key] = given
            sources.append(OPTIONS[key])
            continue
        for name in ENVIRONMENT_VARIABLES[key]:
            if environ.get(name):
                values[key] = environ[name]
                sources.append(name)
                break
    config_path = None
    if len(values) < len(OPTIONS) or options.config is not None:
        config_path = find_config(options.config)
        if options.config is not None and config_path is None:
            raise InvalidInputError([Problem(str(options.config), "--workspace-config", "no config.json there")])
        if config_path is not None:
            for key, value in _read_config(config_path).items():
                if key not in values:
                    values[key] = value
                    sources.append(str(config_path))
    missing = [key for key in OPTIONS if key not in values]
    if missing:
        searched = f"; no config.json found from {Path.cwd()} up" if config_path is None else f"; {config_path} lacks it"
        raise InvalidInputError([
            Problem("Azure ML workspace", key,
                    f"not set: give {OPTIONS[key]}, or set {' or '.join(ENVIRONMENT_VARIABLES[key])}{searched}")
            for key in missing
        ])  # fmt: skip
    return Workspace(source=", ".join(dict.fromkeys(sources)), **values)


ClientFactory = Callable[[WorkspaceOptions], Any]


def default_factory(options: WorkspaceOptions) -> Any:
    """MLClient with DefaultAzureCredential. Constructing it contacts nothing; the first call does."""
    require()
    require("azure.identity")
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    workspace = resolve_workspace(options)
    return MLClient(
        credential=DefaultAzureCredential(),
        subscription_id=workspace.subscription_id,
        resource_group_name=workspace.resource_group,
        workspace_name=workspace.workspace_name,
    )


_seam: Seam[ClientFactory] = Seam(default_factory)


def set_client_factory(factory: ClientFactory | None) -> ClientFactory:
    """Replace the client factory (tests: a fake); None restores the default. Returns the previous one."""
    return _seam.replace(factory)


def get_client(options: WorkspaceOptions | None = None) -> Any:
    return _seam.factory(options or WorkspaceOptions())
