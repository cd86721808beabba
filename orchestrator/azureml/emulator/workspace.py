"""The emulated Azure ML workspace: the part of `MLClient` the orchestrator calls, executed on this machine.

Install it at the client seam (`orchestrator.azureml.client.set_client_factory(workspace.factory)`) and every
code path that takes an MLClient (run --backend azureml, rerun, schedule, the trigger's kick_off and watchdog)
submits to it instead of Azure. Jobs are real azure-ai-ml objects going in and coming out: a submitted job is
written to YAML and read back with `load_job` (what the service receives), `jobs.get` returns a loaded
PipelineJob with its status, and child jobs are `CommandJob` entities.

State lives in a folder (jobs/<name>/: the job's YAML, state.json, each node's working directory, outputs and
user_logs; mlruns/: the MLflow store), so a later process sees the same workspace.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from orchestrator.azureml.emulator.assumptions import Assumptions
from orchestrator.azureml.emulator.endpoints import EmulatedBatchDeployments, EmulatedBatchEndpoints, EmulatedComponents
from orchestrator.azureml.emulator.state import JOB_FILE, STATE_FILE, TERMINAL, Child, JobState
from orchestrator.azureml.emulator.tracking import Tracking
from orchestrator.azureml.emulator.warm_nodes import enabled_by_default as warm_nodes_enabled

log = logging.getLogger("orchestrator.azureml.emulator")

STUDIO = "emulated://{root}/jobs/{name}"
NAMED_OUTPUTS = "named-outputs"
TRIGGER_TIME = "${{creation_context.trigger_time}}"


@dataclass(frozen=True)
class EmulatedIds:
    """The workspace coordinates its nodes see (AZUREML_ARM_* variables)."""

    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    resource_group: str = "emulated"
    workspace_name: str = "emulated"


class Poller:
    """What begin_* returns: an LROPoller's result()/done()/wait()."""

    def __init__(self, value: Any, done: Any = None) -> None:
        self._value, self._done = value, done

    def result(self, timeout: float | None = None) -> Any:
        self.wait(timeout)
        return self._value

    def wait(self, timeout: float | None = None) -> None:
        if self._done is not None:
            self._done(timeout)

    def done(self) -> bool:
        return True


class EmulatedWorkspace:
    def __init__(self, root: Path, *, assumptions: Assumptions | None = None,
                 node_environment: Mapping[str, str] | None = None, ids: EmulatedIds | None = None,
                 warm_nodes: bool | None = None) -> None:
        self.root = root.resolve()
        # Nodes whose command is one plain `python SCRIPT ...` fork from a warm parent (emulator/warm_nodes.py).
        self.warm_nodes = warm_nodes_enabled() if warm_nodes is None else warm_nodes
        self.root.mkdir(parents=True, exist_ok=True)
        self.assumptions = assumptions or Assumptions()
        self.node_environment = dict(node_environment or {})  # added to every node's variables (tests' knobs)
        self.workspace = ids or EmulatedIds()
        self.lock = threading.Lock()
        self.tracking = Tracking(self.root / "mlruns")
        self.states: dict[str, JobState] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._reuse: dict[str, tuple[str, str]] = {}  # reuse key -> (job, node) of a completed node
        self._load()
        self.jobs = EmulatedJobs(self)
        self.schedules = EmulatedSchedules(self)
        self.workspaces = EmulatedWorkspaces(self)
        self.components = EmulatedComponents(self)
        self.batch_endpoints = EmulatedBatchEndpoints(self)
        self.batch_deployments = EmulatedBatchDeployments(self, self.batch_endpoints)
        self.workspace_name = self.workspace.workspace_name

    def factory(self, options: Any = None) -> EmulatedWorkspace:
        """For `set_client_factory`: every client the code asks for is this workspace."""
        return self

    def _load(self) -> None:
        for path in sorted((self.root / "jobs").glob(f"*/{STATE_FILE}")):
            state = JobState.load(path)
            if state.status not in TERMINAL:  # the process that ran it is gone
                state.status = "Failed"
                for child in state.children.values():
                    if child.status not in TERMINAL:
                        child.status, child.error = "Failed", "the emulator process running it ended"
            self.states[state.name] = state
            for child in state.children.values():
                if child.status == "Completed" and child.reuse_key and child.reused_from is None:
                    self._reuse[child.reuse_key] = (state.name, child.node)

    @staticmethod
    def new_name() -> str:
        return uuid.uuid4().hex

    # -- reuse -------------------------------------------------------------------------------------------

    def reusable(self, key: str) -> Child | None:
        with self.lock:
            found = self._reuse.get(key)
            if found is None:
                return None
            child = self.states[found[0]].children.get(found[1])
        return child if child is not None and child.status == "Completed" else None

    def remember(self, key: str, job: str, node: str) -> None:
        with self.lock:
            self._reuse[key] = (job, node)

    # -- submitting and running ------------------------------------------------------------------------

    def submit(self, job: Any, *, experiment_name: str | None = None, schedule: str | None = None) -> str:
        from azure.ai.ml import load_job
        from azure.core.exceptions import HttpResponseError

        from orchestrator.azureml.emulator.engine import JobRun
        from orchestrator.azureml.emulator.graph import read
        from orchestrator.azureml.export import write_pipeline

        name = str(job.name or self.new_name())
        with self.lock:
            if name in self.states:
                raise HttpResponseError(message=f"Conflict: a job named {name} exists in the workspace")
        folder = self.root / "jobs" / name
        folder.mkdir(parents=True, exist_ok=True)
        absolute_code(job)
        write_pipeline(job, folder / JOB_FILE, source=f"emulated workspace submission {name}")
        loaded = load_job(folder / JOB_FILE)  # what the service would have received
        if experiment_name:
            loaded.experiment_name = experiment_name
        pipeline = read(loaded)
        state = JobState(name=name, experiment=pipeline.experiment, folder=str(folder),
                         assumptions=list(self.assumptions.names), schedule=schedule)
        with self.lock:
            self.states[name] = state
        state.save(self.lock)
        thread = threading.Thread(target=self._run, args=(JobRun(self, state, pipeline),), name=f"emulated-{name}",
                                  daemon=True)
        self._threads[name] = thread
        thread.start()
        return name

    def _run(self, run: Any) -> None:
        try:
            run.run()
        except Exception:  # noqa: BLE001 - an emulator bug must still end the job, as a service error would
            log.exception("emulated job %s crashed", run.state.name)
            with self.lock:
                run.state.status = "Failed"
            run.state.save(self.lock)

    def studio_clone(self, name: str) -> str:
        """Studio's Clone, then Submit, on job `name` (Learn: how-to-use-pipeline-ui, "Clone a pipeline job to
        continue editing": a draft with the job's graph, inputs and settings): the definition the workspace keeps,
        submitted again under a new name, with its experiment and tags. Returns the new job's name."""
        from azure.ai.ml import load_job

        job: Any = load_job(Path(self.state(name).folder) / JOB_FILE)
        job.name = self.new_name()
        return self.submit(job, experiment_name=job.experiment_name)

    def wait(self, name: str, timeout: float | None = None) -> str:
        """Block until job `name` ends (this process's jobs); its status."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout)
        return self.state(name).status

    def state(self, name: str) -> JobState:
        from azure.core.exceptions import ResourceNotFoundError

        with self.lock:
            state = self.states.get(name)
        if state is None:
            raise ResourceNotFoundError(f"Job {name} not found in the emulated workspace")
        return state

    def child(self, name: str) -> tuple[JobState, Child]:
        from azure.core.exceptions import ResourceNotFoundError

        with self.lock:
            for state in self.states.values():
                for child in state.children.values():
                    if child.name == name:
                        return state, child
        raise ResourceNotFoundError(f"Job {name} not found in the emulated workspace")

    def cancel(self, name: str) -> None:
        state = self.state(name)
        if state.status in TERMINAL:
            return
        with self.lock:
            state.cancel_requested = True
        state.save(self.lock)

    def studio_url(self, name: str) -> str:
        return STUDIO.format(root=self.root.as_posix().lstrip("/"), name=name)

    def close(self, timeout: float = 60.0) -> None:
        """Cancel what still runs and wait for it (tests: nothing outlives the test)."""
        for name, thread in list(self._threads.items()):
            if thread.is_alive():
                self.cancel(name)
                thread.join(timeout)


def absolute_code(job: Any) -> None:
    """A job loaded from a file names its code relative to that file; it is written again elsewhere."""
    for node in (getattr(job, "jobs", None) or {}).values():
        component = getattr(node, "component", None)
        code = getattr(component, "code", None)
        if component is not None and isinstance(code, str) and code and not Path(code).is_absolute() \
                and "://" not in code and not code.startswith("azureml:"):
            base = Path(getattr(component, "_base_path", None) or ".")
            component.code = str((base / code).resolve())


# ------------------------------------------------------------------------------------------ workspaces


class EmulatedWorkspaces:
    """MLClient.workspaces: `get` returns a Workspace entity whose mlflow_tracking_uri is the emulated store."""

    def __init__(self, ws: EmulatedWorkspace) -> None:
        self._ws = ws

    def get(self, name: str | None = None, **kwargs: Any) -> Any:
        from azure.ai.ml.entities import Workspace

        return Workspace(name=name or self._ws.workspace.workspace_name, mlflow_tracking_uri=self._ws.tracking.uri)


# ------------------------------------------------------------------------------------------------ jobs


class EmulatedJobs:
    """MLClient.jobs."""

    def __init__(self, ws: EmulatedWorkspace) -> None:
        self._ws = ws
        # name -> (status, entity). Loading a pipeline's YAML through azure-ai-ml costs ~0.2 s per call, and a
        # follower polls `get` every fraction of a second: an entity is loaded again only when its status
        # changed. Callers here only read what `get` returns (prepare_clone builds a new job from it).
        self._loaded: dict[str, tuple[str, Any]] = {}

    def create_or_update(self, job: Any, *, experiment_name: str | None = None, skip_validation: bool = False,
                         **kwargs: Any) -> Any:
        if not skip_validation:
            result = job._validate()  # what the SDK runs before sending anything
            if not result.passed:
                from azure.ai.ml.exceptions import ValidationException

                raise ValidationException(message=str(result.error_messages), no_personal_data_message="invalid job")
        name = self._ws.submit(job, experiment_name=experiment_name)
        return self.get(name)

    def get(self, name: str) -> Any:
        with self._ws.lock:
            known = name in self._ws.states
        if not known:
            state, child = self._ws.child(name)
            return _child_job(state, child)
        from azure.ai.ml import load_job
        from azure.ai.ml.entities._job.job_service import JobService

        state = self._ws.state(name)
        cached = self._loaded.get(name)
        if cached is not None and cached[0] == state.status:
            return cached[1]
        job = load_job(Path(state.folder) / JOB_FILE)
        job.name = name
        job._status = state.status
        ids = self._ws.workspace
        job._id = (f"/subscriptions/{ids.subscription_id}/resourceGroups/{ids.resource_group}/providers/"
                   f"Microsoft.MachineLearningServices/workspaces/{ids.workspace_name}/jobs/{name}")  # as the service
        job.services = {"Studio": JobService(endpoint=self._ws.studio_url(name))}  # type: ignore[dict-item]
        self._loaded[name] = (state.status, job)
        return job

    def list(self, *, parent_job_name: str | None = None, **kwargs: Any) -> Iterator[Any]:
        if parent_job_name is None:
            with self._ws.lock:
                names = list(self._ws.states)
            return iter([self.get(n) for n in names])
        state = self._ws.state(parent_job_name)
        with self._ws.lock:
            children = list(state.children.values())
        return iter([_child_job(state, c) for c in children])

    def stream(self, name: str) -> None:
        """Print each node's status as it changes until the job ends (the service streams its logs)."""
        seen: dict[str, str] = {}
        while True:
            state = self._ws.state(name)
            with self._ws.lock:
                changes = [(c.node, c.status) for c in state.children.values() if seen.get(c.node) != c.status]
                status = state.status
            for node, node_status in changes:
                seen[node] = node_status
                print(f"{name}: {node} {node_status}", flush=True)
            if status in TERMINAL:
                print(f"{name}: {status}", flush=True)
                return
            time.sleep(0.2)

    def begin_cancel(self, name: str, **kwargs: Any) -> Poller:
        self._ws.cancel(name)
        return Poller(None, done=lambda timeout: self._ws.wait(name, timeout))

    def download(self, name: str, *, download_path: str | Path = ".", output_name: str | None = None,
                 all: bool = False, **kwargs: Any) -> None:  # noqa: A002 - the SDK's name
        from azure.core.exceptions import ResourceNotFoundError

        with self._ws.lock:
            is_pipeline = name in self._ws.states
        if is_pipeline:
            outputs = dict(self._ws.state(name).outputs)
        else:
            outputs = dict(self._ws.child(name)[1].outputs)
        chosen = list(outputs) if all else [output_name or "default"]
        found = False
        for output in chosen:
            folder = outputs.get(output)
            if folder is None or not Path(folder).is_dir():
                continue
            shutil.copytree(folder, Path(download_path) / NAMED_OUTPUTS / output, dirs_exist_ok=True)
            found = True
        if not found:
            raise ResourceNotFoundError(f"job {name} has no output {output_name!r}")


def _child_job(state: JobState, child: Child) -> Any:
    from azure.ai.ml.entities import CommandJob

    properties = {"azureml.pipeline.nodeName": child.node}
    if child.reused_from:
        properties["emulator.reusedFrom"] = child.reused_from
    job = CommandJob(name=child.name, display_name=child.display_name, tags=dict(child.tags),
                     experiment_name=state.experiment, properties=properties, command="")
    job._status = child.status
    job.parent_job_name = state.name
    return job


# ------------------------------------------------------------------------------------------- schedules


class EmulatedSchedules:
    """MLClient.schedules, and `trigger` to fire a schedule now (the service fires on its cron)."""

    def __init__(self, ws: EmulatedWorkspace) -> None:
        self._ws = ws
        self._schedules: dict[str, Any] = {}

    def begin_create_or_update(self, schedule: Any, **kwargs: Any) -> Poller:
        result = schedule._validate()
        if not result.passed:
            from azure.ai.ml.exceptions import ValidationException

            raise ValidationException(message=str(result.error_messages), no_personal_data_message="invalid schedule")
        from orchestrator.azureml.export import write_pipeline

        # What the service keeps: the job as sent (code paths made absolute first, as for a job submission).
        absolute_code(schedule.create_job)
        write_pipeline(schedule.create_job, self._folder(schedule.name) / JOB_FILE, source=f"schedule {schedule.name}")
        self._schedules[schedule.name] = schedule
        return Poller(schedule)

    def _folder(self, name: str) -> Path:
        return self._ws.root / "schedules" / name

    def get(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self._schedules:
            raise ResourceNotFoundError(f"Schedule {name} not found")
        return self._schedules[name]

    def list(self, **kwargs: Any) -> Iterator[Any]:
        return iter(list(self._schedules.values()))

    def trigger(self, name: str, at: datetime | None = None) -> str:
        """Fire schedule `name` as its trigger would at `at` (default now): its job is submitted with
        ${{creation_context.trigger_time}} in string inputs replaced by the trigger time
        (how-to-schedule-pipeline-job, "expressions"). Returns the new job's name."""
        from azure.ai.ml import load_job

        self.get(name)
        when = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
        job: Any = load_job(self._folder(name) / JOB_FILE)  # a fresh copy of the job the schedule holds
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        for input_name, value in list((job.inputs or {}).items()):
            literal = getattr(value, "_data", value)
            if isinstance(literal, str) and TRIGGER_TIME in literal:
                setattr(job.inputs, input_name, literal.replace(TRIGGER_TIME, stamp))
        job.name = f"{name}-{when.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        return self._ws.submit(job, experiment_name=job.experiment_name, schedule=name)
