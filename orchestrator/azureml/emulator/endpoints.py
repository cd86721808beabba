"""Batch endpoints with pipeline-component deployments in the emulated workspace: `MLClient.batch_endpoints`,
`MLClient.batch_deployments` and the part of `MLClient.components` they need (docs/azureml.md, "The emulated
workspace"). Each behaviour and its source:

- a deployment needs its endpoint to exist (azure-ai-ml operations/_batch_deployment_operations.py,
  `begin_create_or_update` gets the endpoint first);
- a deployment's pipeline component given as an entity is registered under its name and version, unless that
  version exists, in which case the registered one is used by id (`_validate_component`, same file);
- the tags applied to an invoked job are the deployment configuration's `tags` ("The tags which will be applied
  to the job", REST model BatchPipelineComponentDeploymentConfiguration), which azure-ai-ml fills from the
  component's tags only when it sends the component as an entity (pipeline_component_batch_deployment.py,
  `_to_rest_object`): a deployment of an already registered version applies none;
- `settings` are the job's run-time settings (same REST model): `continue_on_step_failure` is read;
- invoking creates a pipeline job of the component with the literal inputs given, the component's defaults for
  the rest (Learn: how-to-access-data-batch-endpoints-jobs, literal inputs for pipeline-component deployments),
  under the experiment named at invocation (same page, "job properties") or, when none is named, the
  endpoint's name (the emulator's choice: no source says which; nothing here depends on it), routed to the
  named deployment or the endpoint's default (Learn: reference-yaml-endpoint-batch, `defaults.deployment_name`);
  the job lists its defaulted inputs too, unless the `defaults-hidden` assumption is on (no source says which);
  an input the component does not declare, or a required one (not `optional`, no default: Learn,
  reference-yaml-component-command) not given, is refused and no job is created.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    from orchestrator.azureml.emulator.workspace import EmulatedWorkspace

COMPONENT_FILE = "component.yml"


def _not_found(what: str) -> Exception:
    from azure.core.exceptions import ResourceNotFoundError

    return ResourceNotFoundError(f"{what} not found in the emulated workspace")


def _refused(message: str) -> Exception:
    from azure.ai.ml.exceptions import ValidationException

    return ValidationException(message=message, no_personal_data_message=message)


class EmulatedComponents:
    """MLClient.components: `get(name, version)`; registration happens when a deployment names a new version."""

    def __init__(self, ws: EmulatedWorkspace) -> None:
        self._ws = ws

    def folder(self, name: str, version: str) -> Path:
        return self._ws.root / "components" / name / version

    def exists(self, name: str, version: str) -> bool:
        return (self.folder(name, version) / COMPONENT_FILE).is_file()

    def register(self, component: Any) -> str:
        """What the service keeps: the component as YAML, code paths absolute (as for a job submission)."""
        import yaml

        from orchestrator.azureml.emulator.workspace import absolute_code
        from orchestrator.azureml.export import plain_data, restore_node_labels

        absolute_code(component)
        data = plain_data(component._to_dict())
        restore_node_labels(data, component)
        folder = self.folder(str(component.name), str(component.version))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / COMPONENT_FILE).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return component_id(str(component.name), str(component.version))

    def get(self, name: str, version: str | None = None, **kwargs: Any) -> Any:
        from azure.ai.ml import load_component

        if version is None or not self.exists(name, version):
            raise _not_found(f"Component {name}:{version}")
        return load_component(self.folder(name, version) / COMPONENT_FILE)

    def data(self, name: str, version: str) -> dict[str, Any]:
        import yaml

        loaded: dict[str, Any] = yaml.safe_load((self.folder(name, version) / COMPONENT_FILE).read_text(encoding="utf-8"))
        return loaded


def component_id(name: str, version: str) -> str:
    return f"azureml:{name}:{version}"


@dataclass
class Deployment:
    """A pipeline-component deployment as the service keeps it."""

    name: str
    endpoint: str
    component: tuple[str, str]  # name, version
    job_tags: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    entity: Any = None  # what get() returns


class EmulatedBatchEndpoints:
    """MLClient.batch_endpoints: begin_create_or_update, get, list, invoke."""

    def __init__(self, ws: EmulatedWorkspace) -> None:
        self._ws = ws
        self.endpoints: dict[str, Any] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}

    def begin_create_or_update(self, endpoint: Any, **kwargs: Any) -> Any:
        from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name

        from orchestrator.azureml.emulator.workspace import Poller

        validate_endpoint_or_deployment_name(endpoint.name)  # what _to_rest_batch_endpoint checks before sending
        defaults = dict(getattr(endpoint, "defaults", None) or {})
        default = defaults.get("deployment_name")
        if default and (endpoint.name, default) not in self.deployments:
            raise _refused(f"endpoint {endpoint.name}: default deployment {default} does not exist")
        kept = copy.copy(endpoint)
        self.endpoints[str(endpoint.name)] = kept
        return Poller(kept)

    def get(self, name: str, **kwargs: Any) -> Any:
        if name not in self.endpoints:
            raise _not_found(f"Batch endpoint {name}")
        return self.endpoints[name]

    def list(self, **kwargs: Any) -> Iterator[Any]:
        return iter(list(self.endpoints.values()))

    def invoke(self, endpoint_name: str, *, deployment_name: str | None = None, inputs: Mapping[str, Any] | None = None,
               experiment_name: str | None = None, job_name: str | None = None, **kwargs: Any) -> Any:
        """A pipeline job of the deployment's component; returns a BatchJob naming it, as the SDK does."""
        from azure.ai.ml.entities import BatchJob

        endpoint = self.get(endpoint_name)
        chosen = deployment_name or (getattr(endpoint, "defaults", None) or {}).get("deployment_name")
        if not chosen or (endpoint_name, chosen) not in self.deployments:
            raise _refused(f"endpoint {endpoint_name}: no deployment {chosen or '(no default deployment)'}")
        deployment = self.deployments[(endpoint_name, chosen)]
        name = job_name or uuid.uuid4().hex
        job = self._job(deployment, {k: _literal(v) for k, v in (inputs or {}).items()},
                        experiment_name or endpoint_name)
        job.name = name
        result = job._validate()
        if not result.passed:
            raise _refused(f"endpoint {endpoint_name}: {result.error_messages}")
        self._ws.submit(job, experiment_name=job.experiment_name)
        return BatchJob(name=name, id=name, type="pipeline", status="Preparing")

    def _job(self, deployment: Deployment, given: Mapping[str, str], experiment: str) -> Any:
        """The component's graph as a pipeline job: its jobs, the inputs given over its defaults, the
        deployment's job tags and settings. Written beside the component (its code paths are absolute) and
        read back with load_job, as every submission here is."""
        import yaml
        from azure.ai.ml import load_job

        components = self._ws.components
        data = components.data(*deployment.component)
        declared = data.get("inputs") or {}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise _refused(f"the deployment's component has no input {', '.join(unknown)} (inputs: {', '.join(declared)})")
        inputs = {k: given.get(k, spec.get("default")) for k, spec in declared.items()}
        missing = [k for k, spec in declared.items() if inputs[k] is None and not spec.get("optional")]
        if missing:  # Learn, reference-yaml-component-command: an input not marked optional is required
            raise _refused(f"the deployment's component requires input {', '.join(missing)}: give it when invoking")
        job = {
            "type": "pipeline",
            "display_name": data.get("display_name") or deployment.endpoint,
            "experiment_name": experiment,
            "tags": dict(deployment.job_tags),
            # defaults-hidden: only what the invocation gave (the published component's nodes bind only run_key,
            # which is required, so what runs is the same).
            "inputs": {k: v for k, v in inputs.items()
                       if v is not None and (k in given or not self._ws.assumptions.defaults_hidden)},
            "jobs": data.get("jobs") or {},
            "settings": {"continue_on_step_failure":
                         str(deployment.settings.get("continue_on_step_failure", "True")).lower() != "false"},
        }
        path = components.folder(*deployment.component) / f"invocation-{uuid.uuid4().hex}.yml"
        path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
        return load_job(path)


class EmulatedBatchDeployments:
    """MLClient.batch_deployments: begin_create_or_update, get, list, for pipeline-component deployments."""

    def __init__(self, ws: EmulatedWorkspace, endpoints: EmulatedBatchEndpoints) -> None:
        self._ws = ws
        self._endpoints = endpoints

    def begin_create_or_update(self, deployment: Any, **kwargs: Any) -> Any:
        from azure.ai.ml.entities import PipelineComponent, PipelineComponentBatchDeployment
        from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name

        from orchestrator.azureml.emulator.workspace import Poller

        if not isinstance(deployment, PipelineComponentBatchDeployment):
            raise _refused("the emulated workspace deploys pipeline components only")
        validate_endpoint_or_deployment_name(deployment.name, is_deployment=True)
        self._endpoints.get(str(deployment.endpoint_name))  # the SDK checks the endpoint exists first
        component = deployment.component
        components = self._ws.components
        if isinstance(component, PipelineComponent):
            result = component._validate()
            if not result.passed:
                raise _refused(f"pipeline component {component.name}: {result.error_messages}")
            key = (str(component.name), str(component.version))
            # _validate_component: an existing version is used by id, and then no tags reach the job.
            job_tags = {} if components.exists(*key) else {str(k): str(v) for k, v in (component.tags or {}).items()}
            if not components.exists(*key):
                components.register(component)
        elif isinstance(component, str) and component.startswith("azureml:") and component.count(":") == 2:
            _, name, version = component.split(":")
            if not components.exists(name, version):
                raise _not_found(f"Component {name}:{version}")
            key, job_tags = (name, version), {}
        else:
            raise _refused("a pipeline-component deployment needs a component (entity or azureml:name:version)")
        kept = Deployment(name=str(deployment.name), endpoint=str(deployment.endpoint_name), component=key,
                          job_tags=job_tags, settings={str(k): str(v) for k, v in (deployment.settings or {}).items()},
                          tags=dict(deployment.tags or {}), entity=deployment)
        self._endpoints.deployments[(kept.endpoint, kept.name)] = kept
        return Poller(deployment)

    def get(self, name: str, endpoint_name: str, **kwargs: Any) -> Any:
        found = self._endpoints.deployments.get((endpoint_name, name))
        if found is None:
            raise _not_found(f"Batch deployment {endpoint_name}/{name}")
        return found.entity

    def list(self, endpoint_name: str, **kwargs: Any) -> Iterator[Any]:
        return iter([d.entity for (endpoint, _), d in self._endpoints.deployments.items() if endpoint == endpoint_name])


def _literal(value: Any) -> str:
    """An invocation input: an `Input(type="string", default=...)` as the SDK's invoke sends it (its default is
    the literal's value, _batch_endpoint_operations.py), or a plain value."""
    default = getattr(value, "default", None)
    return str(default if default is not None else value)
