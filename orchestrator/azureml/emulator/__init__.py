"""An emulated Azure ML workspace that runs compiled pipeline jobs on this machine (docs/azureml.md,
"The emulated workspace")."""

from orchestrator.azureml.emulator.assumptions import Assumptions
from orchestrator.azureml.emulator.workspace import EmulatedWorkspace

__all__ = ["Assumptions", "EmulatedWorkspace"]
