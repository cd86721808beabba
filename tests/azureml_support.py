"""Builders shared by the Azure ML backend's tests (no tests here): notebook repositories and plans made in
tmp folders, named for what they exercise (docs/architecture.md#tiny-named-test-data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan.spec import EnvironmentSpec, ResolvedPlan, StepSpec, TargetSpec

pytest.importorskip("azure.ai.ml")

STOCK = Path(__file__).resolve().parents[1] / "environments"
CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"


def tiny_notebook(path: Path, source: str = "x = 1") -> Path:
    """A minimal valid notebook file, written without nbformat (fast enough for hundreds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                   "source": source}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


def step(notebook: str, **overrides: Any) -> StepSpec:
    fields: dict[str, Any] = dict(
        id=notebook.removesuffix(".ipynb").replace("/", "_").replace("-", "_"), notebook=notebook, target="cpu",
        environment="cpu", kernel="python3", timeout_s=600.0, cell_timeout_s=300.0, retries=1, pythonpath=(".",),
    )
    fields.update(overrides)
    return StepSpec(**fields)


def make_repo(root: Path) -> Path:
    """A notebook repository like examples/: a plan folder `notebooks/` inside a git repository, with files
    the snapshot must leave out (ignored outputs, a virtualenv, checkpoints, the orchestrator's runs)."""
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    plan_root = root / "notebooks"
    for name in ("data/00_prepare.ipynb", "recommenders/01_similarity.ipynb", "models/02_train.ipynb",
                 "models/03_serverless.ipynb", "gpu/05_gpu.ipynb", "scratch/wip.ipynb", "scratch/after_wip.ipynb"):
        tiny_notebook(plan_root / name)
    (plan_root / "nbutils.py").write_text("def helper():\n    return 1\n")
    shutil.copytree(STOCK, root / "environments")
    (root / ".gitignore").write_text("*.log\n")
    (plan_root / ".gitignore").write_text("data/output/\n")
    (plan_root / "data" / "output").mkdir(parents=True)
    (plan_root / "data" / "output" / "big.csv").write_text("a,b\n1,2\n")
    (plan_root / "run.log").write_text("noise\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / "myenv").mkdir()
    (root / "myenv" / "pyvenv.cfg").write_text("home = /usr\n")  # a virtualenv under any name
    (plan_root / ".ipynb_checkpoints").mkdir()
    tiny_notebook(plan_root / ".ipynb_checkpoints" / "wip-checkpoint.ipynb")
    (plan_root / ".orchestrator" / "runs").mkdir(parents=True)
    (plan_root / ".orchestrator" / "runs" / "results.json").write_text("{}")
    return plan_root


def examples_plan(plan_root: Path, **plan_overrides: Any) -> ResolvedPlan:
    """The examples' shape: a data step, a step after it, CPU/GPU/serverless targets, two environments,
    a skipped notebook and one after it."""
    steps = (
        step("data/00_prepare.ipynb", retries=0),
        step("recommenders/01_similarity.ipynb", after=("data_00_prepare",), parameters={"top_k": 10},
             expect={"precision_at_k": ">= 0.25"}),
        step("models/02_train.ipynb", timeout_s=None, cell_timeout_s=None),
        step("models/03_serverless.ipynb", target="small", parameters={"alphas": [[0.1, 1.0]], "name": "it's ${{x}}"}),
        step("gpu/05_gpu.ipynb", target="gpu", environment="gpu"),
        step("scratch/wip.ipynb", skip="work in progress"),
        step("scratch/after_wip.ipynb", after=("scratch_wip",)),
    )
    fields: dict[str, Any] = dict(
        root=plan_root,
        plan_file=plan_root / "orchestrator.yml",
        experiment="examples",
        steps=steps,
        targets={
            "cpu": TargetSpec("cpu", azureml_compute="cpu-cluster"),
            "gpu": TargetSpec("gpu", gpus=1, azureml_compute="gpu-cluster"),
            "small": TargetSpec("small", azureml_instance_type="Standard_DS3_v2"),
        },
        environments={
            "default": EnvironmentSpec("default"),
            "cpu": EnvironmentSpec("cpu", conda="../environments/cpu.yml", image=CPU_IMAGE),
            "gpu": EnvironmentSpec("gpu", conda="../environments/gpu.yml", image=GPU_IMAGE),
        },
    )
    fields.update(plan_overrides)
    return ResolvedPlan(**fields)


def generated_plan(root: Path, count: int = 300) -> ResolvedPlan:
    """`count` notebooks in 15 folders: every 10th runs after the one before it and every 5th after the
    folder's first; every 25th needs a serverless GPU; two environments (CPU, GPU)."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    shutil.copytree(STOCK, root / "environments")
    steps: list[StepSpec] = []
    for index in range(count):
        notebook = f"area_{index % 15:02d}/nb_{index:03d}.ipynb"
        tiny_notebook(root / notebook, source=f"value = {index}")
        after: tuple[str, ...] = ()
        if index % 10 == 9:
            after += (steps[-1].id,)
        if index % 5 == 4 and index >= 15:
            first = f"area_{index % 15:02d}_nb_{index % 15:03d}"
            if first not in after:
                after += (first,)
        gpu = index % 25 == 0
        steps.append(step(notebook, after=after, target="gpu" if gpu else "cpu", environment="gpu" if gpu else "cpu",
                          parameters={"index": index}))
    return ResolvedPlan(
        root=root,
        plan_file=root / "orchestrator.yml",
        experiment="generated-300",
        steps=tuple(steps),
        targets={
            "cpu": TargetSpec("cpu", azureml_compute="cpu-cluster"),
            "gpu": TargetSpec("gpu", gpus=1, azureml_instance_type="Standard_NC6s_v3"),
        },
        environments={
            "cpu": EnvironmentSpec("cpu", conda="environments/cpu.yml", image=CPU_IMAGE),
            "gpu": EnvironmentSpec("gpu", conda="environments/gpu.yml", image=GPU_IMAGE),
        },
    )


def node_inputs(node: Any) -> dict[str, Any]:
    """A node's inputs as plain values (the SDK wraps them)."""
    return {name: getattr(value, "_data", value) for name, value in node.inputs.items()}
