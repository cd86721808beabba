"""The command of the pipeline's report node (settings.on_finalize): build the run's report.

This script ships in the report node's own code snapshot next to the orchestrator package (see
orchestrator/azureml/snapshot.py), so the report is built by the same code as a local run's report. It only
puts that package on the import path and calls it (docs/architecture.md#thin-entry-points).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# <snapshot>/steps/report_step.py -> <snapshot> holds the orchestrator package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.azureml.finalize import main  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
