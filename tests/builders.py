"""Builders for test notebooks: tiny, generated in tmp folders, named for the behaviour they exercise
(docs/architecture.md#tiny-named-test-data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def make_notebook(
    path: Path,
    *cells: str,
    parameters: str | None = None,
    kernel: str | None = "python3",
    metadata: dict[str, Any] | None = None,
    markdown_first: str | None = None,
) -> Path:
    """Write a notebook whose code cells are `cells`.

    parameters: source of a cell tagged `parameters`, placed first (papermill's convention).
    kernel: the kernelspec name; None writes a notebook with no kernelspec at all.
    metadata: merged into the notebook metadata (e.g. {"orchestrator": {"target": "gpu"}}).
    """
    nb = new_notebook()
    if markdown_first is not None:
        nb.cells.append(new_markdown_cell(markdown_first))
    if parameters is not None:
        nb.cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(new_code_cell(source) for source in cells)
    if kernel is not None:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nb.metadata.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def glue_source(name: str, value: Any) -> str:
    """Cell source that records a metric the way scrapbook's `glue` does, without needing scrapbook."""
    return (
        "from IPython.display import display\n"
        f"display({{'application/scrapbook.scrap.json+json': "
        f"{{'name': {name!r}, 'data': {value!r}, 'encoder': 'json', 'version': 1}}}}, "
        f"metadata={{'scrapbook': {{'name': {name!r}, 'data': True, 'display': False}}}}, raw=True)"
    )


def left_running(tag: str, within_s: float = 3.0) -> list[str]:
    """Processes still alive after `within_s` whose command line or working directory contains `tag` (zombies,
    waiting for an init that may not reap in a container, count as gone). Found from the outside by content,
    not by pid: a kernel in its own PID namespace only knows its namespace's pids."""
    import time

    import psutil

    deadline = time.monotonic() + within_s
    while True:
        found = []
        for process in psutil.process_iter(["cmdline", "cwd", "status"]):
            info = process.info
            if info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
                continue
            if any(tag in part for part in info["cmdline"] or ()) or tag in (info["cwd"] or ""):
                found.append(f"{process.pid}: {' '.join(info['cmdline'] or ())}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# The example plan of docs/architecture.md#plan-file (the loader and the JSON schema must both accept it).
DESIGN_PLAN = """\
version: 1
experiment: recommenders-notebooks
defaults:
  target: cpu
  environment: cpu
  timeout: 30m
  cell_timeout: 10m
  retries: 0
  kernel: python3
  parameters: {}
  pythonpath: ["."]
targets:
  cpu: {azureml: {compute: cpu-cluster}, local: {slots: auto}}
  gpu: {azureml: {compute: gpu-cluster}, gpus: 1}
  spot: {azureml: {instance_type: Standard_NC6s_v3}, local: {slots: 2}, gpus: 1}
environments:
  cpu: {conda: environments/cpu.yml, image: "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"}
  gpu: {conda: environments/gpu.yml, image: "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"}
  registered: {azureml: "recommenders-gpu:3"}
secret_env: [MY_TOKEN]
notebooks:
  - glob: "examples/**/*.ipynb"
  - path: examples/01_train.ipynb
    parameters: {epochs: 1}
    expect: {accuracy: ">= 0.9"}
    after: [examples/00_prepare.ipynb]
  - path: examples/03_gpu.ipynb
    target: gpu
    environment: gpu
  - glob: "examples/scratch/**"
    skip: "work in progress"
"""
