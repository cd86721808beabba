"""Plan environments -> Azure ML environments: one object per distinct definition, shared by every node.

Each distinct environment is one image build in the workspace, so two plan environments with the same
definition (same image, same conda content) become ONE object, and every node using either references it
(docs/azureml-sdk.md#pipeline-shape, docs/azureml-sdk.md#environments). Inline environments are anonymous: Azure ML names them by a hash of their
content, so recompiling an unchanged plan gives the same environment and keeps node reuse (docs/azureml-sdk.md#reuse).

Defaults, so that a plan written for the local backend compiles as it is:
- an environment with nothing set (the built-in `default`) is the orchestrator's stock environment,
  `environments/cpu.yml` or `environments/gpu.yml` on the matching Azure ML base image, by the target of
  the steps using it;
- a conda file without an image gets the CPU base image, or the CUDA one if a GPU step uses it;
- a conda file that lacks what the step runner imports (RUNNER_PACKAGES) gets it added, pinned as in the
  stock environment, with a warning naming the file and the packages: a node without them dies at import
  (a project's own conda file rarely lists papermill or azureml-mlflow). An image without a conda file is
  used as it is: its content cannot be read here.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.spec import EnvironmentSpec, ResolvedPlan

CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04"
STOCK_DIR = Path(__file__).resolve().parents[2] / "environments"
# What steps/run_notebook.py and steps/mlflow_log.py import (plus ipykernel, which runs the kernel), as conda
# and pip spell them: every notebook node's environment must provide these. Pins come from environments/cpu.yml.
RUNNER_CONDA = ("papermill", "nbclient", "nbformat", "jupyter_client", "ipykernel", "pyzmq")
RUNNER_PIP = ("mlflow-skinny", "azureml-mlflow")
# A package that also satisfies one of the above (mlflow includes everything mlflow-skinny has).
SATISFIED_BY = {"mlflow-skinny": ("mlflow",)}

log = logging.getLogger("orchestrator.azureml")


@dataclass(frozen=True)
class EnvironmentDefinition:
    """What makes two environments the same image: a registered reference, or image + conda content."""

    registered: str | None = None  # "azureml:name:version" or "azureml:name@latest"
    image: str | None = None
    conda: str | None = None  # canonical JSON of the conda file's content

    @property
    def label(self) -> str:
        return self.registered or self.image or "conda"


def _plan_file(plan: ResolvedPlan) -> str:
    return str(plan.plan_file or plan.root)


def _read_conda(plan: ResolvedPlan, name: str, relative: str) -> dict[str, Any]:
    path = (plan.root / relative).resolve()
    where = f"environments.{name}.conda"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError([Problem(_plan_file(plan), where, f"conda file not found: {path}")]) from None
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInputError([Problem(_plan_file(plan), where, f"cannot read {path} as YAML ({exc})")]) from None
    if not isinstance(data, dict) or not isinstance(data.get("dependencies"), list):
        raise InvalidInputError([Problem(str(path), "dependencies", "expected a conda file with a dependencies list")])
    return data


def _stock_conda(gpu: bool) -> dict[str, Any]:
    path = STOCK_DIR / ("gpu.yml" if gpu else "cpu.yml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError:
        raise InvalidInputError(
            f"the orchestrator's stock environment {path} is missing; set `conda` or `image` for the "
            "environment in orchestrator.yml"
        ) from None
    assert isinstance(data, dict)
    return data


def _name(spec: object) -> str:
    """The normalized package name of a conda or pip requirement ("conda-forge::jupyter_client=8" -> jupyter-client)."""
    text = str(spec).split("::")[-1]
    return re.sub(r"[-_.]+", "-", re.split(r"[=<>!~\[ @;]", text.strip(), maxsplit=1)[0]).lower()


def _stock_pins() -> dict[str, str]:
    """Normalized name -> the stock CPU environment's requirement (with its pin)."""
    pins: dict[str, str] = {}
    for dependency in _stock_conda(gpu=False)["dependencies"]:
        for spec in dependency.get("pip", []) if isinstance(dependency, dict) else [dependency]:
            pins[_name(spec)] = str(spec)
    return pins


def with_runner_packages(conda: dict[str, Any], where: str) -> dict[str, Any]:
    """`conda` with the step runner's packages added where missing (a warning names them and `where`)."""
    dependencies = list(conda.get("dependencies") or [])
    pip_lists = [d["pip"] for d in dependencies if isinstance(d, dict) and isinstance(d.get("pip"), list)]
    have = {_name(d) for d in dependencies if not isinstance(d, dict)} | {_name(p) for pips in pip_lists for p in pips}
    pins = _stock_pins()

    def missing(names: tuple[str, ...]) -> list[str]:
        return [n for n in names if _name(n) not in have and not any(_name(o) in have for o in SATISFIED_BY.get(n, ()))]

    conda_missing, pip_missing = missing(RUNNER_CONDA), missing(RUNNER_PIP)
    if not conda_missing and not pip_missing:
        return conda
    log.warning("%s lacks what the notebook runner imports; added for Azure ML: %s", where,
                ", ".join(conda_missing + pip_missing))
    pip_entry = next((d for d in dependencies if isinstance(d, dict) and isinstance(d.get("pip"), list)), None)
    at = dependencies.index(pip_entry) if pip_entry is not None else len(dependencies)
    dependencies[at:at] = [pins.get(_name(n), n) for n in conda_missing]
    if pip_missing:
        if "pip" not in have:
            dependencies.insert(at, pins.get("pip", "pip"))
        if pip_entry is None:
            dependencies.append({"pip": []})
            pip_entry = dependencies[-1]
        pip_entry = {"pip": [*pip_entry["pip"], *(pins.get(_name(n), n) for n in pip_missing)]}
        dependencies = [pip_entry if isinstance(d, dict) and "pip" in d else d for d in dependencies]
    return {**conda, "dependencies": dependencies}


def _registered(value: str) -> str:
    return value if value.startswith("azureml:") else f"azureml:{value}"


def define(plan: ResolvedPlan, spec: EnvironmentSpec, *, gpu: bool) -> tuple[EnvironmentDefinition, dict[str, Any] | None]:
    """The definition of one plan environment (and its conda content, for building the object)."""
    if spec.azureml:
        return EnvironmentDefinition(registered=_registered(spec.azureml)), None
    conda: dict[str, Any] | None
    if spec.conda is None and spec.image is None:
        conda = _stock_conda(gpu)
        image = GPU_IMAGE if gpu else CPU_IMAGE
    else:
        conda = _read_conda(plan, spec.name, spec.conda) if spec.conda else None
        if conda is not None:
            conda = with_runner_packages(conda, f"{(plan.root / str(spec.conda)).resolve()} (environments.{spec.name})")
        image = spec.image or (GPU_IMAGE if gpu else CPU_IMAGE)
    canonical = json.dumps(conda, sort_keys=True) if conda is not None else None
    return EnvironmentDefinition(image=image, conda=canonical), conda


class EnvironmentSet:
    """The Azure ML environment objects of one compiled pipeline, one per distinct definition."""

    def __init__(self, plan: ResolvedPlan) -> None:
        self._plan = plan
        self._objects: dict[EnvironmentDefinition, Any] = {}
        self._by_use: dict[tuple[str, bool], EnvironmentDefinition] = {}

    def definition(self, env_name: str, *, gpu: bool) -> EnvironmentDefinition:
        """The definition for a plan environment used by a CPU or GPU step (which picks stock defaults)."""
        key = (env_name, gpu)
        if key not in self._by_use:
            spec = self._plan.environments.get(env_name)
            if spec is None:
                known = ", ".join(sorted(self._plan.environments)) or "none"
                raise InvalidInputError(
                    [Problem(_plan_file(self._plan), "environments", f"unknown environment {env_name!r} (known: {known})")]
                )
            definition, conda = define(self._plan, spec, gpu=gpu)
            if definition not in self._objects:
                self._objects[definition] = self._build(definition, conda, env_name)
            self._by_use[key] = definition
        return self._by_use[key]

    def stock(self) -> EnvironmentDefinition:
        """The orchestrator's own CPU environment (environments/cpu.yml): where the report node runs, whatever
        the notebooks' environments hold (it needs mlflow, jinja2 and the DevOps client, not the project's)."""
        definition, conda = define(self._plan, EnvironmentSpec("orchestrator"), gpu=False)
        if definition not in self._objects:
            self._objects[definition] = self._build(definition, conda, "orchestrator")
        return definition

    def get(self, definition: EnvironmentDefinition) -> Any:
        """The environment object (or registered reference string) for a definition."""
        return self._objects[definition]

    @property
    def objects(self) -> dict[EnvironmentDefinition, Any]:
        return dict(self._objects)

    @staticmethod
    def _build(definition: EnvironmentDefinition, conda: dict[str, Any] | None, env_name: str) -> Any:
        if definition.registered:
            # A registered environment is referenced by name; its image is already built (docs/azureml-sdk.md#environments).
            return definition.registered
        from azure.ai.ml.entities import Environment

        # No name or description: inline environments are registered anonymously by content (docs/azureml-sdk.md#environments),
        # and anything besides image + conda would only risk a second build of the same image.
        return Environment(image=definition.image, conda_file=conda)
