"""A pipeline job as the emulator runs it: typed nodes read from azure-ai-ml's own loaded job.

The emulated workspace receives every job the way the service does, serialized: a job given in memory is
written to YAML and read back with `load_job` (the file `az ml job create` would send), so what runs is what
the request would have carried, and the two ways in (`create_or_update`, `orchestrator emulate FILE`) read the
same forms: a literal, `${{parent.inputs.X}}`, `${{parent.jobs.N.outputs.O}}`, `${{parent.outputs.O}}`, or no
value for an optional input that was not given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

from orchestrator.errors import InvalidInputError, Problem

_PARENT_INPUT = re.compile(r"\$\{\{\s*parent\.inputs\.([A-Za-z0-9_]+)\s*\}\}")
_NODE_OUTPUT = re.compile(r"^\$\{\{\s*parent\.jobs\.([A-Za-z0-9_]+)\.outputs\.([A-Za-z0-9_]+)\s*\}\}$")
_PIPELINE_OUTPUT = re.compile(r"^\$\{\{\s*parent\.outputs\.([A-Za-z0-9_]+)\s*\}\}$")


@dataclass(frozen=True)
class Literal:
    value: str  # may still hold ${{parent.inputs.X}} inside a longer string; resolved when the node starts


@dataclass(frozen=True)
class NodeOutput:
    node: str
    output: str


Binding = Union[Literal, NodeOutput, None]  # None: an optional input without a value


@dataclass(frozen=True)
class Environment:
    image: str | None
    conda: Mapping[str, Any] | None
    registered: str | None = None  # "azureml:name:version": its packages are not known here

    @property
    def fingerprint(self) -> str:
        return json.dumps({"image": self.image, "conda": self.conda, "registered": self.registered}, sort_keys=True)


@dataclass(frozen=True)
class Node:
    name: str
    display_name: str | None
    tags: Mapping[str, str]
    command: str
    code: Path | None
    environment: Environment
    inputs: Mapping[str, Binding]
    outputs: Mapping[str, str | None]  # output name -> the pipeline output it is bound to, if any
    timeout_s: float | None
    deterministic: bool
    component: str  # the component's definition as JSON (part of the reuse key)

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.node for b in self.inputs.values() if isinstance(b, NodeOutput)))


@dataclass(frozen=True)
class Pipeline:
    experiment: str
    display_name: str | None
    tags: Mapping[str, str]
    inputs: Mapping[str, str]
    outputs: tuple[str, ...]
    nodes: Mapping[str, Node]  # in the job's order
    finalize: str | None
    continue_on_step_failure: bool
    force_rerun: bool
    notes: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"  # Python's form: what the service substitutes for a boolean
    return str(value)


def _binding(value: Any) -> Binding:
    data = getattr(value, "_data", value)
    path = getattr(data, "path", None)  # a loaded binding reads as Input(path="${{...}}")
    if path is not None and not isinstance(data, (str, int, float)):
        data = path
    if data is None:
        return None
    if isinstance(data, str):
        found = _NODE_OUTPUT.match(data)
        if found:
            return NodeOutput(found.group(1), found.group(2))
    return Literal(_text(data))


def _environment(value: Any) -> Environment:
    if isinstance(value, str):
        return Environment(image=None, conda=None, registered=value)
    conda = getattr(value, "conda_file", None)
    return Environment(image=getattr(value, "image", None), conda=conda if isinstance(conda, dict) else None)


def _code(component: Any) -> Path | None:
    code = getattr(component, "code", None)
    if not code:
        return None
    path = Path(str(code))
    if not path.is_absolute():
        path = Path(getattr(component, "_base_path", None) or ".") / path
    return path.resolve()


def _node(name: str, node: Any) -> Node:
    component = node.component
    if getattr(node, "type", None) != "command" or not hasattr(component, "command"):
        raise InvalidInputError([Problem(f"jobs.{name}", str(getattr(node, "type", "?")),
                                         "the emulated workspace runs command nodes only")])
    outputs: dict[str, str | None] = {}
    for out_name in (component.outputs or {}):
        bound = getattr(node.outputs.get(out_name), "_data", None) if node.outputs else None
        found = _PIPELINE_OUTPUT.match(bound) if isinstance(bound, str) else None
        outputs[out_name] = found.group(1) if found else None
    definition = {
        "command": component.command,
        "inputs": {k: [getattr(i, "type", None), bool(getattr(i, "optional", False))] for k, i in (component.inputs or {}).items()},
        "outputs": sorted(outputs),
    }
    limits = getattr(node, "limits", None)
    timeout = getattr(limits, "timeout", None) if limits is not None else None
    return Node(
        name=name,
        display_name=node.display_name,
        tags={str(k): str(v) for k, v in (node.tags or {}).items()},
        command=str(component.command),
        code=_code(component),
        environment=_environment(component.environment),
        inputs={k: _binding(v) for k, v in (node.inputs or {}).items()},
        outputs=outputs,
        timeout_s=float(timeout) if timeout else None,
        deterministic=getattr(component, "is_deterministic", True) is not False,
        component=json.dumps(definition, sort_keys=True),
    )


def read(job: Any) -> Pipeline:
    """The emulator's view of a loaded PipelineJob."""
    settings = job.settings
    finalize = getattr(settings, "on_finalize", None) if settings is not None else None
    nodes = {name: _node(name, node) for name, node in job.jobs.items()}
    problems = [Problem(f"jobs.{n.name}", f"inputs.{k}", f"takes an output of {b.node!r}, which is not a node of the job")
                for n in nodes.values() for k, b in n.inputs.items() if isinstance(b, NodeOutput) and b.node not in nodes]
    if finalize and finalize not in nodes:
        problems.append(Problem("settings.on_finalize", str(finalize), "names no node of the job"))
    if problems:
        raise InvalidInputError(problems)
    continue_on_failure = getattr(settings, "continue_on_step_failure", None)
    return Pipeline(
        experiment=str(job.experiment_name or "Default"),
        display_name=job.display_name,
        tags={str(k): str(v) for k, v in (job.tags or {}).items()},
        inputs={k: _text(getattr(v, "_data", v)) for k, v in (job.inputs or {}).items() if getattr(v, "_data", v) is not None},
        outputs=tuple(job.outputs or {}),
        nodes=nodes,
        finalize=str(finalize) if finalize else None,
        # Learn (reference-yaml-job-pipeline): continue_on_step_failure defaults to true.
        continue_on_step_failure=continue_on_failure is not False,
        force_rerun=bool(getattr(settings, "force_rerun", False)),
    )


def resolve(value: str, pipeline_inputs: Mapping[str, str]) -> str:
    """A literal with its ${{parent.inputs.X}} references replaced by the pipeline's input values."""
    return _PARENT_INPUT.sub(lambda m: pipeline_inputs.get(m.group(1), ""), value)
