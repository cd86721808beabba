"""The compiled pipeline as a batch endpoint with a pipeline-component deployment (docs/azureml.md#pipeline-endpoint).

Azure ML v2's successor of a v1 published pipeline endpoint is a batch endpoint whose deployment is a pipeline
component (Learn: migrate-to-v2-execution-pipeline). Each invocation creates a pipeline job from the component,
with the literal inputs the caller gives (Learn: how-to-access-data-batch-endpoints-jobs).

What the component is, and why:
- the compiled job's notebook nodes (same components, snapshot and environments as a `run`), each bound to the
  endpoint's `parameters` input, so one invocation's notebook parameters reach every notebook;
- **no report node**: a pipeline component cannot carry on_finalize (azure-ai-ml refuses "On_init/on_finalize
  is not supported for pipeline component"), and a report node without it would start with the notebooks.
  Every invoked job is reported by the Event Grid backstop (orchestrator/azureml/backstop.py);
- inputs: `run_key` (required: each invocation names its own, so nothing is reused by accident), `parameters`
  (a JSON object of notebook parameters for the run, bound to every node's `invocation_parameters`), `devops`
  (optional: the DevOps routing of the run, names only, as the report node takes it), and `expected`/`title`
  with the compiled values as defaults: what the backstop reads from the job to account for every notebook;
- tags: the compiled job's (`orchestrator`, `plan`, `repository`, `commit`...) plus `endpoint`/`deployment` and
  `component` (name:version, where the backstop finds the defaults when a job does not list them).
  The deployment's pipeline configuration carries them as "the tags which will be applied to the job" (REST
  model BatchPipelineComponentDeploymentConfiguration.tags), which is how the backstop recognises the job from
  its RunStatusChanged event. azure-ai-ml fills that field from the component's tags only while the component
  is an entity: `_validate_component` (operations/_batch_deployment_operations.py) swaps a component whose
  name and version already exist for its id, and `_to_rest_object` (pipeline_component_batch_deployment.py)
  then sends no tags. So every publish registers a new component version (`version_now`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from orchestrator.azureml.compile import REPORT_NODE
from orchestrator.azureml.components import INVOCATION_INPUT, RUN_KEY
from orchestrator.errors import InvalidInputError, Problem

DEFAULT_DEPLOYMENT = "notebooks"
COMPONENT_TAG = "component"  # name:version of the published component, on every job the endpoint runs
EXPECTED_INPUT = "expected"  # the report node's input names: the backstop reads either (rerun.report_inputs)
TITLE_INPUT = "title"
DEVOPS_INPUT = "devops"
PARAMETERS_INPUT = "parameters"  # notebook parameters of one invocation, bound to every node (components.py)
# Run-time settings of the pipeline job (REST BatchPipelineComponentDeploymentConfiguration.settings): what the
# compiled job sets, so one failing notebook does not cancel the others.
SETTINGS = {"continue_on_step_failure": "True"}
FILES = ("endpoint.yml", "deployment.yml", "component.yml")
HEADER = """\
# Written by `orchestrator publish` from {source}; read back with azure-ai-ml's load_batch_endpoint /
# load_batch_deployment / load_component. Create in this order (docs/azureml.md#pipeline-endpoint):
#   az ml batch-endpoint create --file endpoint.yml
#   az ml batch-deployment create --file deployment.yml --set-default
# deployment.yml leaves out `settings` (continue_on_step_failure), which load_batch_deployment refuses; the
# service's default for a pipeline job is to continue, and `orchestrator publish` without --out sends it.
"""


@dataclass(frozen=True)
class Publication:
    endpoint: Any  # azure.ai.ml.entities.BatchEndpoint
    deployment: Any  # azure.ai.ml.entities.PipelineComponentBatchDeployment, its component an entity
    component: Any  # azure.ai.ml.entities.PipelineComponent

    def describe(self) -> str:
        nodes = len(self.component.jobs)
        return (f"batch endpoint {self.endpoint.name}, deployment {self.deployment.name}: pipeline component "
                f"{self.component.name}:{self.component.version} ({nodes} notebook node{'s' * (nodes != 1)}; "
                f"inputs {', '.join(self.component.inputs)})")


def check_name(name: str, option: str, *, deployment: bool = False) -> str:
    """Azure's rule for endpoint and deployment names, by azure-ai-ml's own check
    (entities/_endpoint/_endpoint_helpers.py: 3 to 32 letters, digits and '-', a letter first, no '-' last)."""
    from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name
    from azure.ai.ml.exceptions import ValidationException

    try:
        validate_endpoint_or_deployment_name(name, is_deployment=deployment)
    except ValidationException as exc:
        raise InvalidInputError([Problem(option, name, " ".join(str(exc.message).split()))]) from None
    return name


def version_now() -> str:
    """A new component version per publish (see the module docstring): the UTC time, to the microsecond."""
    return datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S%f")


def component_name(endpoint: str) -> str:
    """Component names are lowercase letters, digits and `_` (Learn: reference-yaml-component-command)."""
    return "orchestrator_" + endpoint.lower().replace("-", "_")


def build(job: Any, *, endpoint: str, deployment: str = DEFAULT_DEPLOYMENT, version: str | None = None) -> Publication:
    """The endpoint, the deployment and its pipeline component for a compiled job (compile_plan)."""
    from azure.ai.ml import Input
    from azure.ai.ml.entities import BatchEndpoint, PipelineComponent, PipelineComponentBatchDeployment

    from orchestrator.azureml.rerun import input_value

    check_name(endpoint, "--endpoint")
    check_name(deployment, "--deployment", deployment=True)
    report = job.jobs[REPORT_NODE]
    nodes = {name: node for name, node in job.jobs.items() if name != REPORT_NODE}
    if not nodes:
        raise InvalidInputError([Problem("plan", "notebooks", "every notebook is skipped: there is nothing to publish")])
    name, version = component_name(endpoint), version or version_now()
    tags = {**{str(k): str(v) for k, v in (job.tags or {}).items()}, "endpoint": endpoint, "deployment": deployment,
            COMPONENT_TAG: f"{name}:{version}"}
    for node in nodes.values():  # the compiled job is built for this publication: its nodes are changed in place
        setattr(node.inputs, INVOCATION_INPUT, f"${{{{parent.inputs.{PARAMETERS_INPUT}}}}}")  # wrapped as a binding
    inputs = {
        RUN_KEY: Input(type="string", description="Names this run; the same key lets Azure ML reuse completed notebooks."),
        PARAMETERS_INPUT: Input(type="string", optional=True, default="{}",
                                description="Notebook parameters for this run, a JSON object: set in every notebook, "
                                            "over the published values (as --param)."),
        DEVOPS_INPUT: Input(type="string", optional=True,
                            description="DevOps routing for the report (JSON, names only, as the report node takes it)."),
        EXPECTED_INPUT: Input(type="string", optional=True, default=str(input_value(report.inputs, EXPECTED_INPUT)),
                              description="The plan's notebooks, for the report: leave as published."),
        TITLE_INPUT: Input(type="string", optional=True, default=str(input_value(report.inputs, TITLE_INPUT)),
                           description="The report's title."),
    }
    component = PipelineComponent(
        name=name, version=version, display_name=job.display_name,
        description=f"{job.description}; published to batch endpoint {endpoint}", jobs=nodes, inputs=inputs, tags=tags)
    return Publication(
        endpoint=BatchEndpoint(name=endpoint, description=f"Runs the notebooks of {tags.get('plan', 'the plan')} "
                               f"from {tags.get('repository', 'the repository')} (orchestrator)"),
        deployment=PipelineComponentBatchDeployment(name=deployment, endpoint_name=endpoint, component=component,
                                                    settings=dict(SETTINGS), tags=tags,
                                                    description=component.description),
        component=component,
    )


def published_inputs(client: Any, job: Any) -> dict[str, Any] | None:
    """What the report needs for a job of a published endpoint whose inputs show only what its invocation gave:
    the defaults of the component its `component` tag names (`components.get`), under the job's own inputs.
    None for a job without that tag. No source says whether the service lists a defaulted input on the job, so
    the backstop does not depend on it (the emulator's `defaults-hidden` assumption)."""
    from orchestrator.azureml.rerun import input_value

    name, _, version = str((getattr(job, "tags", None) or {}).get(COMPONENT_TAG) or "").partition(":")
    if not name or not version:
        return None
    component = client.components.get(name=name, version=version)
    values: dict[str, Any] = {k: getattr(spec, "default", None) for k, spec in (component.inputs or {}).items()}
    given = getattr(job, "inputs", None) or {}
    values.update({k: input_value(given, k) for k in given if input_value(given, k) is not None})
    return values if values.get(EXPECTED_INPUT) is not None else None


def validate(publication: Publication) -> None:
    """azure-ai-ml's own validation of the pipeline component (graph, bindings, required inputs)."""
    result = publication.component._validate()
    if not result.passed:
        raise InvalidInputError([Problem("pipeline component", where, str(msg))
                                 for where, msg in sorted(result.error_messages.items())])


def component_dict(publication: Publication, base: Path) -> dict[str, Any]:
    """The component as YAML data, code paths relative to `base`; node labels kept (export.py's fixes)."""
    from orchestrator.azureml.export import plain_data, relative_code, restore_node_labels

    data: dict[str, Any] = dict(publication.component._to_dict())
    restore_node_labels(data, publication.component)
    relative_code(data, base.resolve())
    result: dict[str, Any] = plain_data(data)
    return result


def write(publication: Publication, out: Path, *, source: str) -> list[Path]:
    """endpoint.yml, deployment.yml (its component: ./component.yml) and component.yml in `out`."""
    from orchestrator.azureml.export import plain_data
    from steps.atomic import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    deployment = plain_data(publication.deployment._to_dict())
    deployment["component"] = f"./{FILES[2]}"
    deployment.pop("settings", None)  # refused by load_batch_deployment (see HEADER)
    documents = (plain_data(publication.endpoint._to_dict()), deployment, component_dict(publication, out))
    paths = []
    for name, data in zip(FILES, documents):
        path = out / name
        write_text_atomic(path, HEADER.format(source=source) + yaml.safe_dump(data, sort_keys=False, width=120,
                                                                             allow_unicode=True))
        paths.append(path)
    return paths


def load(out: Path) -> tuple[Any, Any]:
    """The endpoint and deployment `write` left in `out`, read with azure-ai-ml's loaders (the check `--out`
    runs before it says it is done)."""
    from azure.ai.ml import load_batch_deployment, load_batch_endpoint

    return load_batch_endpoint(out / FILES[0]), load_batch_deployment(out / FILES[1])


def create(client: Any, publication: Publication) -> Any:
    """Create or update the endpoint, then the deployment, then make it the endpoint's default."""
    endpoint = client.batch_endpoints.begin_create_or_update(publication.endpoint).result()
    deployment = client.batch_deployments.begin_create_or_update(publication.deployment).result()
    endpoint.defaults = {"deployment_name": publication.deployment.name}
    client.batch_endpoints.begin_create_or_update(endpoint).result()
    return deployment
