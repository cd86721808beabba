"""The `orchestrator` command line, as a package (docs/architecture.md#commands-and-exit-codes).

- `main.py`: the group, the table of commands (imported only when one is asked for) and `main`, the one place
  where exceptions become exit codes and messages;
- `options.py`: the options several commands share (plan selection, --param, workspace, DevOps);
- `run.py` (`run`, `rerun`), `inspect.py` (`validate`, `schema`, `report`); the Azure ML and trigger commands
  live beside their libraries (`orchestrator/azureml/commands.py`, `orchestrator/trigger/commands.py`) and
  import only `options.py` from here.

`import orchestrator.cli` loads click and this package's two small modules, no plan model and no SDK.
"""

from orchestrator.cli.main import cli, main

__all__ = ["cli", "main"]
