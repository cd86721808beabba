"""Import guard for the optional Azure SDKs: a missing extra fails with the exact pip command to run."""

from __future__ import annotations

import importlib
from types import ModuleType

from orchestrator.errors import MissingExtraError

EXTRA = "azureml"


def require(module: str = "azure.ai.ml") -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the `azureml` extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = {"azure.ai.ml": "azure-ai-ml", "azure.identity": "azure-identity", "pathspec": "pathspec"}
        raise MissingExtraError(top.get(module, module), EXTRA) from None
