"""An emulated Azure ML workspace that runs compiled pipeline jobs on this machine (docs/azureml.md,
"The emulated workspace")."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.azureml.emulator.assumptions import Assumptions
    from orchestrator.azureml.emulator.workspace import EmulatedWorkspace

__all__ = ["Assumptions", "EmulatedWorkspace"]
# Imported on first use: `orchestrator run` imports the `--emulate` options (emulator/cli.py) on every local run,
# and the workspace module costs ~0.1 CPU-s there for nothing.
_LAZY = {"Assumptions": "orchestrator.azureml.emulator.assumptions",
         "EmulatedWorkspace": "orchestrator.azureml.emulator.workspace"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
