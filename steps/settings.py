"""The step settings that travel from the plan to the step runner, each declared once: its name, type,
default and help (docs/architecture.md#step-contract).

From this table come the step runner's command-line options (steps/_cli.py), the Azure ML node command's
options (steps/azureml_step.py), the notebook component's inputs and command line
(orchestrator/azureml/components.py), the node inputs of each step (orchestrator/azureml/compile.py) and the
defaults of StepRequest, StepSpec and the plan file's `defaults`. A new setting is one entry here plus the
StepSpec field that carries it. Standard library only: it ships with the step scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Union

Value = Union[int, float, None]

# The defaults, typed for the dataclass fields that carry them (StepRequest, StepSpec, the plan model).
DEFAULT_OUTPUT_LIMIT: Final = 2_000_000
DEFAULT_START_TIMEOUT: Final = 60.0
DEFAULT_SHUTDOWN_GRACE: Final = 5.0


@dataclass(frozen=True)
class StepSetting:
    field: str  # the StepRequest / StepSpec field
    option: str  # the step runner's command-line option
    type: type[int] | type[float]
    default: Value  # None: no limit unless the plan sets one
    help: str
    component_input: str | None = None  # the Azure ML notebook component's input, when the setting crosses there
    positive: bool = True  # a value must be > 0 (else >= 0)

    @property
    def input_type(self) -> Literal["integer", "number"]:
        return "integer" if self.type is int else "number"

    @property
    def dest(self) -> str:
        """The argparse attribute of `option`."""
        return self.option.lstrip("-").replace("-", "_")


TIMEOUT = StepSetting("timeout_s", "--timeout", float, None,
                      "whole-notebook limit in seconds, counted from when the kernel is ready", "timeout")
CELL_TIMEOUT = StepSetting("cell_timeout_s", "--cell-timeout", float, None, "per-cell limit in seconds",
                           "cell_timeout")
OUTPUT_LIMIT = StepSetting("output_limit_bytes", "--output-limit", int, DEFAULT_OUTPUT_LIMIT,
                           "cap on the output stored per cell, in bytes", "output_limit")
START_TIMEOUT = StepSetting("start_timeout_s", "--start-timeout", float, DEFAULT_START_TIMEOUT,
                            "kernel start limit in seconds, apart from the notebook's timeout")
SHUTDOWN_GRACE = StepSetting("shutdown_grace_s", "--shutdown-grace", float, DEFAULT_SHUTDOWN_GRACE,
                             "seconds the kernel may take to exit by itself before it is killed (0: at once)",
                             positive=False)

STEP_SETTINGS: tuple[StepSetting, ...] = (TIMEOUT, CELL_TIMEOUT, OUTPUT_LIMIT, START_TIMEOUT, SHUTDOWN_GRACE)
# The settings a plan sets per notebook, which Azure ML nodes receive as component inputs.
COMPONENT_SETTINGS: tuple[StepSetting, ...] = tuple(s for s in STEP_SETTINGS if s.component_input is not None)
