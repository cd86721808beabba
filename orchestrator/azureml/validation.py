"""azure-ai-ml's offline validation of a compiled pipeline, each distinct component checked once.

`PipelineJob._validate()` (the client-side check `create_or_update` runs) costs about 50 ms a node: for every node
it builds a fresh marshmallow schema (twice), dumps the node with its component inline (command, code,
environment) and loads it back, and the pipeline's own schema check dumps and loads every node again; a
300-notebook plan, whose nodes share three components, took 16 s. This module runs the same checks, with the
SDK's own schemas and rule methods, arranged so that nothing is done more than once:

- the pipeline's own fields: its schema, on a copy without nodes (the SDK drops the messages about `jobs` and
  `component` there: PipelineJob._get_skip_fields_in_schema_validation; the nodes are checked below);
- each node's own fields (type, compute, resources, limits, identity...): one schema per node class and base
  path, on a copy whose inputs and outputs are empty (the SDK drops their schema messages:
  BaseNode._get_skip_fields_in_schema_validation; the rules below check them) and whose component is a
  reference unless it is the first node of that component;
- each distinct component: inline, once, in the first node that uses it; its problems are reported on every
  node that uses it (`jobs.<node>.component...`), as the full validation does;
- the graph rules, by the SDK's methods: each node's required inputs, bindings to pipeline inputs, the input
  names of the pipeline, compute set, on_init/on_finalize isolation.

tests/test_azureml_validation.py breaks pipelines in several ways and checks that this reports exactly the
problems the full validation reports.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestrator.errors import InvalidInputError, Problem

# What a node's component is dumped as when its component was checked (or dumped, export.py) in another node: a
# valid reference, so the node schema has nothing to say about it.
COMPONENT_REFERENCE = "azureml:validated_elsewhere:1"
_COMPONENT_PATH = "component"


def validate(job: Any) -> None:
    """Raise InvalidInputError listing every problem azure-ai-ml's validation finds in `job`."""
    errors = error_messages(job)
    if errors:
        raise InvalidInputError([Problem("pipeline", where, message) for where, message in sorted(errors.items())])


def error_messages(job: Any) -> dict[str, str]:
    """yaml path -> message, as `job._validate().error_messages` (same keys and messages)."""
    return {str(k): str(v) for k, v in check(job).error_messages.items()}


def check(job: Any) -> Any:
    """The validation result (azure-ai-ml's MutableValidationResult) of `job`, a PipelineJob."""
    from azure.ai.ml.constants._job.pipeline import ValidationErrorCode
    from azure.ai.ml.entities import PipelineJob
    from azure.ai.ml.entities._component.pipeline_component import PipelineComponent

    unknown = ValidationErrorCode.PARAMETER_TYPE_UNKNOWN
    if not isinstance(job, PipelineJob) or not isinstance(job.component, PipelineComponent):
        return job._validate()  # not a graph built here: nothing to share
    result = _pipeline_fields(job)
    # PipelineJob._customized_validate, with PipelineComponent._customized_validate's per-node loop done here.
    result.merge_with(super(PipelineJob, job)._customized_validate())
    result.merge_with(
        _graph(job.component),
        condition_skip=lambda d: d.error_code == unknown and d.yaml_path.startswith("inputs"),
    )
    result.merge_with(job._validate_compute_is_set())
    result.merge_with(job._validate_input())
    result.merge_with(job._validate_init_finalize_job())
    return result


def _pipeline_fields(job: Any) -> Any:
    """The pipeline's schema check (SchemaValidatableMixin.__schema_validate) on a copy without nodes."""
    bare = copy.copy(job)
    bare.component = copy.copy(job.component)
    bare.component._jobs = {}
    return _schema_check(job._schema_for_validation, bare, job)


def _graph(component: Any) -> Any:
    """PipelineComponent._customized_validate, each node checked by _node."""
    from azure.ai.ml.constants._job.pipeline import ValidationErrorCode
    from azure.ai.ml.entities import Component
    from azure.ai.ml.entities._builders import BaseNode
    from azure.ai.ml.entities._component.pipeline_component import PipelineComponent

    result = super(PipelineComponent, component)._customized_validate()
    for name, value in component.inputs.items():
        if value.type is None:
            result.append_error(
                yaml_path=f"inputs.{name}",
                message="Parameter type unknown, please add type annotation or specify input default value.",
                error_code=ValidationErrorCode.PARAMETER_TYPE_UNKNOWN,
            )
    nodes = _Nodes()
    for name, node in component.jobs.items():
        if not isinstance(node, BaseNode):
            result.merge_with(node._validate(), f"jobs.{name}")  # AutoML and control flow: as the SDK does
            continue
        result.merge_with(nodes.check(node), f"jobs.{name}")
        if isinstance(node.component, Component):
            result.merge_with(component._validate_binding_inputs(node))
    return result


class _Nodes:
    """Node checks sharing one schema per node class and base path, and one component check per component."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[type, str], Any] = {}
        self._components: dict[int, list[Any]] = {}  # id(component) -> its diagnostics, paths from the node

    def check(self, node: Any) -> Any:
        from azure.ai.ml.entities import Component

        key = (type(node), str(node.base_path))
        schema = self._schemas.get(key)
        if schema is None:
            schema = self._schemas[key] = node._schema_for_validation
        component = node._component
        shared = isinstance(component, Component) and id(component) in self._components
        subject = copy.copy(node)
        subject._inputs = type(node._inputs)({})
        subject._outputs = type(node._outputs)({})
        if shared:
            subject._component = COMPONENT_REFERENCE
        result = _schema_check(schema, subject, node)
        if isinstance(component, Component):
            if shared:
                result._errors.extend(copy.copy(d) for d in self._components[id(component)])
            else:
                self._components[id(component)] = [d for d in result._errors if _is_component_path(d.yaml_path)]
        result.merge_with(_node_rules(node))
        return result


def _node_rules(node: Any) -> Any:
    """BaseNode._customized_validate (_validate_inputs), building the node's inputs once: the SDK rebuilds them
    for every input it checks (`_is_input_set`), 2 s for 300 nodes of 16 inputs. Node classes that change
    these rules get the SDK's own method."""
    from azure.ai.ml.entities import Component
    from azure.ai.ml.entities._builders import BaseNode
    from azure.ai.ml.entities._job.sweep.search_space import SweepDistribution

    kind = type(node)
    if kind._customized_validate is not BaseNode._customized_validate or kind._is_input_set is not BaseNode._is_input_set:
        return node._customized_validate()
    result = node._create_empty_validation_result()
    built = node._build_inputs()
    if node._validate_required_input_not_provided and isinstance(node._component, Component):
        for key, meta in node._component.inputs.items():
            if built.get(key) is None and meta.optional is not True and meta.default is None:
                result.append_error(
                    yaml_path=f"inputs.{key}", message=f"Required input {key!r} for component {node.name!r} not provided."
                )
    for name, value in built.items():
        if isinstance(value, SweepDistribution):
            result.append_error(
                yaml_path=f"inputs.{name}",
                message=f"Input of command {node.name} is a SweepDistribution, "
                f"please use command.sweep to transform the command into a sweep node.",
            )
    return result


def _is_component_path(path: str) -> bool:
    return path == _COMPONENT_PATH or path.startswith(_COMPONENT_PATH + ".")


def _schema_check(schema: Any, subject: Any, original: Any) -> Any:
    """SchemaValidatableMixin.__schema_validate with a given schema: dump, drop the fields whose messages the SDK
    drops (so they are neither dumped into the check nor loaded), load, collect."""
    from azure.ai.ml.entities._validation.core import ValidationResultBuilder

    skipped = type(original)._get_skip_fields_in_schema_validation()
    data = schema.dump(subject)
    for name in skipped:
        data.pop(name, None)
    messages = schema.validate(data)
    for name in skipped:
        messages.pop(name, None)
    return ValidationResultBuilder.from_validation_messages(messages, data=data)
