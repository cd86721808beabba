"""A fake `azure.ai.ml.MLClient` for the Azure ML backend's tests: installed at the client factory
(`orchestrator.azureml.client.set_client_factory`), so no test can reach Azure (docs/architecture.md#one-client-factory).

It behaves like the service where the orchestrator depends on it:
- `jobs.get` raises ResourceNotFoundError for an unknown name, and returns a *fresh* job object (the
  stored job written to YAML and read back with `load_job`, as a service round trip would);
- `jobs.create_or_update` runs azure-ai-ml's own validator and keeps the REST body that would be sent;
- `jobs.list(parent_job_name=...)` lists one child per node, `jobs.download` copies local folders into
  `<download_path>/named-outputs/<output>/`, as the real one lays out downloads;
- `schedules.begin_create_or_update` validates and keeps the schedule.
Tests drive a job's life with `finish(...)`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

STUDIO = "https://ml.azure.com/runs/{name}?wsid=/subscriptions/fake/resourcegroups/fake/workspaces/fake"


def rest_body(job: Any) -> str:
    """The JSON that create_or_update would send for `job`, components included."""

    def inline(value: Any) -> Any:
        to_dict = getattr(value, "_to_dict", None)
        return to_dict() if callable(to_dict) else repr(value)

    return json.dumps(job._to_rest_object().as_dict(), default=inline, sort_keys=True)


@dataclass
class Child:
    """What jobs.list(parent_job_name=...) yields: a child job of a pipeline."""

    name: str
    display_name: str | None
    status: str
    tags: dict[str, str]
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class Record:
    job: Any  # as submitted
    yaml_dir: Path
    status: str = "NotStarted"
    statuses: list[str] = field(default_factory=list)  # what successive gets return, before `status`
    children: dict[str, Child] = field(default_factory=dict)  # node name -> child
    outputs: dict[tuple[str, str], Path] = field(default_factory=dict)  # (job or child name, output) -> folder


class FakeJobs:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.created: list[str] = []
        self.bodies: dict[str, str] = {}
        self.gets = 0
        self.fail_create_with: Exception | None = None  # raised by the next create_or_update (a race)
        self.cancelled: list[str] = []
        self._scratch = Path(tempfile.mkdtemp(prefix="fake-mlclient-"))

    # -- the MLClient.jobs surface the orchestrator uses --------------------------------------------------

    def get(self, name: str) -> Any:
        self.gets += 1
        record = self.records.get(name)
        if record is None:
            raise ResourceNotFoundError(f"Job {name} not found")
        from azure.ai.ml import load_job
        from azure.ai.ml.entities._job.job_service import JobService

        job = load_job(record.yaml_dir / "pipeline.yml")
        job.name = name
        job._status = record.statuses.pop(0) if record.statuses else record.status
        job.services = {"Studio": JobService(endpoint=STUDIO.format(name=name))}  # type: ignore[dict-item]
        return job

    def create_or_update(self, job: Any, *, experiment_name: str | None = None, skip_validation: bool = False,
                         **kwargs: Any) -> Any:
        from orchestrator.azureml.export import write_pipeline

        if self.fail_create_with is not None:
            error, self.fail_create_with = self.fail_create_with, None
            raise error
        result = job._validate()  # what the SDK would refuse before sending anything
        if not result.passed:
            from azure.ai.ml.exceptions import ValidationException

            raise ValidationException(message=str(result.error_messages), no_personal_data_message="invalid job")
        name = job.name
        assert name, "submissions must be named (idempotent submission)"
        assert name not in self.records, f"job {name} submitted twice"
        body = rest_body(job)
        folder = self._scratch / name
        write_pipeline(job, folder / "pipeline.yml", source="fake")
        record = Record(job=job, yaml_dir=folder)
        for node_name, node in job.jobs.items():
            record.children[node_name] = Child(name=f"{name}_{node_name}", display_name=node.display_name,
                                               status="NotStarted", tags=dict(node.tags or {}))
        self.records[name] = record
        self.created.append(name)
        self.bodies[name] = body
        return self.get(name)

    def list(self, *, parent_job_name: str | None = None, **kwargs: Any) -> list[Child]:
        if parent_job_name is None:
            return []
        record = self.records.get(parent_job_name)
        if record is None:
            raise ResourceNotFoundError(f"Job {parent_job_name} not found")
        return list(record.children.values())

    def download(self, name: str, *, download_path: str | Path = ".", output_name: str | None = None,
                 all: bool = False) -> None:  # noqa: A002 - the SDK's name
        for record in self.records.values():
            folder = record.outputs.get((name, output_name or "default"))
            if folder is not None:
                shutil.copytree(folder, Path(download_path) / "named-outputs" / str(output_name), dirs_exist_ok=True)
                return
        raise ResourceNotFoundError(f"no output {output_name!r} for job {name}")

    def stream(self, name: str) -> None:
        return None

    def begin_cancel(self, name: str) -> FakePoller:
        record = self.records[name]
        record.statuses = []
        record.status = "Canceled"
        self.cancelled.append(name)
        return FakePoller(None)

    # -- driving a job's life in tests ----------------------------------------------------------------------

    def finish(self, name: str, *, status: str = "Completed", steps: dict[str, tuple[str, Path | None]] | None = None,
               report: Path | None = None, running_polls: int = 1) -> None:
        """End job `name`: each step's child status and output folder; the report node's output folder."""
        record = self.records[name]
        record.statuses = ["Running"] * running_polls
        record.status = status
        for step, (child_status, folder) in (steps or {}).items():
            child = record.children[step]
            child.status = child_status
            if folder is not None:
                record.outputs[(child.name, "result")] = folder
        if report is not None:
            record.outputs[(name, "report")] = report


class FakePoller:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> Any:
        return self._value


class FakeSchedules:
    def __init__(self) -> None:
        self.created: dict[str, Any] = {}
        self.bodies: dict[str, str] = {}

    def begin_create_or_update(self, schedule: Any, **kwargs: Any) -> FakePoller:
        result = schedule._validate()
        assert result.passed, result.error_messages
        self.bodies[schedule.name] = json.dumps(
            schedule._to_rest_object().as_dict(), default=lambda v: v._to_dict() if hasattr(v, "_to_dict") else repr(v)
        )
        self.created[schedule.name] = schedule
        return FakePoller(schedule)


class FakeMLClient:
    def __init__(self) -> None:
        self.jobs = FakeJobs()
        self.schedules = FakeSchedules()
        self.workspaces_seen: list[Any] = []

    def factory(self, options: Any) -> FakeMLClient:
        """Give this to set_client_factory."""
        self.workspaces_seen.append(options)
        return self


def conflict() -> HttpResponseError:
    """What a create races into when another submitter made the same job first."""
    return HttpResponseError(message="Conflict: a job with this name exists")


@pytest.fixture
def fake() -> Iterator[FakeMLClient]:
    """The fake in place of the real client factory for one test (import this fixture where it is used)."""
    from orchestrator.azureml.client import set_client_factory

    client = FakeMLClient()
    previous = set_client_factory(client.factory)
    yield client
    set_client_factory(previous)
