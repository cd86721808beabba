"""Import guard for the optional Azure SDKs: a missing extra fails with the exact pip command to run."""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from orchestrator.errors import MissingExtraError

EXTRA = "azureml"
# azure-ai-ml warns "This is an experimental class" once per schema class it loads (_utils/_experimental.py):
# `publish` reading back a batch deployment printed six such lines, none of them about the user's files.
_EXPERIMENTAL_LOGGER = "azure.ai.ml._utils._experimental"


def quiet_sdk_notices() -> None:
    """For the entry points (the CLI, the Function app): the SDK's notices about itself are not shown."""
    logging.getLogger(_EXPERIMENTAL_LOGGER).setLevel(logging.ERROR)


def require(module: str = "azure.ai.ml") -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the `azureml` extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = {"azure.ai.ml": "azure-ai-ml", "azure.identity": "azure-identity", "pathspec": "pathspec"}
        raise MissingExtraError(top.get(module, module), EXTRA) from None
