"""Small helpers shared by the example notebooks.

The plan's `pythonpath: ["."]` puts this folder (the plan root) on the kernel's PYTHONPATH, so every
notebook can `import nbutils` without installing anything, wherever it sits in the tree and whatever the
kernel's working directory is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from IPython.display import display

ROOT = Path(__file__).resolve().parent
# Where files one notebook writes for a later one go when a notebook runs by hand (papermill, Jupyter):
# data/00_prepare_ratings writes, the recommender reads. Git-ignored: see examples/.gitignore.
OUTPUT_DIR = ROOT / "data" / "output"
# Under the orchestrator, the step's own output folder and those of the steps it runs `after` (the run
# folder locally, each node's output on Azure ML, where nodes share no files otherwise).
STEP_OUTPUT_ENV = "ORCHESTRATOR_STEP_OUTPUT"
AFTER_OUTPUTS_ENV = "ORCHESTRATOR_AFTER_OUTPUTS"

# scrapbook's payload media type for the "json" encoder (scrapbook.schemas.GLUE_PAYLOAD_FMT), the one the
# orchestrator reads metrics from (docs/architecture.md#step-result).
GLUE_MIME = "application/scrapbook.scrap.json+json"


def output_dir() -> Path:
    """Where this notebook writes files for the notebooks that run after it; created on first use."""
    folder = Path(os.environ.get(STEP_OUTPUT_ENV) or OUTPUT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def input_dir(notebook: str) -> Path:
    """Where `notebook` (a path relative to examples/, run `after` by this one) wrote its files."""
    folders = json.loads(os.environ.get(AFTER_OUTPUTS_ENV) or "{}")
    return Path(folders.get(notebook) or OUTPUT_DIR)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values, so the payload is valid JSON."""
    if hasattr(value, "tolist"):  # numpy arrays and numpy scalars (np.float64, np.int64, np.bool_)
        return value.tolist()
    return value


def glue(name: str, value: Any) -> None:
    """Record `value` under `name` exactly as `scrapbook.glue(name, value, encoder="json")` does.

    The same display call, payload (version 1, as scrapbook 0.5 writes it) and metadata, so scrapbook can
    read these notebooks back, and so the examples need no extra dependency. The value is shown nowhere in
    the rendered notebook; print it yourself if a reader should see it.
    """
    data = _plain(value)
    json.dumps(data, allow_nan=False)  # fail here, in the notebook cell, rather than in a reader later
    display(
        {GLUE_MIME: {"name": name, "data": data, "encoder": "json", "version": 1}},
        metadata={"scrapbook": {"name": name, "data": True, "display": False}},
        raw=True,
    )
