"""Where a DevOps report goes and with what credential: one `DevOpsContext`, from one of three sources.

1. A server job's Service Bus message (docs/devops-protocol.md#message-properties): the application properties PlanUrl,
   ProjectId, HubName, PlanId, JobId, TimelineId, TaskInstanceName, TaskInstanceId and AuthToken, keys
   possibly bytes; plus the build id, commit and repository from the message *body*, because the
   properties carry none of them (1.2, 3.6). Such a context can close the waiting server task.
2. A DevOps agent job's environment (SYSTEM_ACCESSTOKEN, SYSTEM_COLLECTIONURI, SYSTEM_TEAMPROJECTID,
   BUILD_BUILDID, ...). An agent job has no server task waiting for a callback: publish test results only.
3. Explicit options (a collection URL, a project, a token read from a file named by an option, docs/architecture.md#secrets-policy).

The token is held in a `Secret`, whose repr and str never show it, so logging a context is harmless.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.devops.hosts import check_devops_url
from orchestrator.devops.message import QueueMessage, decode_properties, read_message_file
from orchestrator.errors import InvalidInputError, Problem

# Required to close a server task: the checklist in docs/devops-protocol.md#service-checklist, plus TaskInstanceId, which is
# the `taskId` of TaskCompleted (2.2) and so cannot be done without.
REQUIRED_PROPERTIES = ("PlanUrl", "ProjectId", "PlanId", "JobId", "TimelineId", "TaskInstanceId", "AuthToken")
# The helper library's default when HubName is absent [X-Props]; the task itself always sends it (1.2).
DEFAULT_HUB = "Release"


class Secret:
    """A credential that does not leak through repr(), str(), f-strings or logging."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class ServerTask:
    """The agentless task waiting for our TaskCompleted (the message properties, verbatim)."""

    hub_name: str
    plan_id: str
    job_id: str
    timeline_id: str
    task_instance_id: str
    task_instance_name: str | None = None

    @classmethod
    def from_properties(cls, props: Mapping[str, Any]) -> ServerTask:
        """From decoded message properties whose ids are present (the caller checked REQUIRED_PROPERTIES)."""
        return cls(
            hub_name=_text(props.get("HubName")) or DEFAULT_HUB,
            plan_id=str(props["PlanId"]).strip(),
            job_id=str(props["JobId"]).strip(),
            timeline_id=str(props["TimelineId"]).strip(),
            task_instance_id=str(props["TaskInstanceId"]).strip(),
            task_instance_name=_text(props.get("TaskInstanceName")),
        )

    @property
    def key(self) -> str:
        """Delivery is at least once: (PlanId, JobId, TaskInstanceId) names one task (docs/devops-protocol.md#pitfalls, docs/devops-protocol.md#service-checklist)."""
        return f"{self.plan_id}/{self.job_id}/{self.task_instance_id}"


@dataclass(frozen=True)
class PipelineRef:
    """Where in a YAML pipeline the run belongs (RunCreateModel.pipelineReference, docs/devops-protocol.md#creating-a-test-run)."""

    stage_name: str | None = None
    stage_attempt: int | None = None
    phase_name: str | None = None
    phase_attempt: int | None = None
    job_name: str | None = None
    job_attempt: int | None = None


@dataclass(frozen=True)
class DevOpsContext:
    collection_url: str            # https://dev.azure.com/org (PlanUrl / System.CollectionUri), no trailing /
    project: str                   # project id or name (ProjectId / System.TeamProjectId)
    token: Secret = field(repr=False)
    build_id: str | None = None
    build_number: str | None = None
    task: ServerTask | None = None  # None: nothing waits for a callback (agent job, schedule, options)
    pipeline: PipelineRef | None = None
    release_uri: str | None = None
    release_environment_uri: str | None = None
    commit: str | None = None
    repository_url: str | None = None
    computer_name: str | None = None
    source: str = "options"        # message | environment | options: for log lines

    def __post_init__(self) -> None:
        object.__setattr__(self, "collection_url", self.collection_url.rstrip("/"))

    @property
    def host_name(self) -> str:
        return self.computer_name or platform.node() or "unknown"

    # ---- sources ---------------------------------------------------------------------------------------

    @classmethod
    def from_properties(cls, properties: Mapping[Any, Any], body: Mapping[str, Any] | None = None,
                        *, where: str = "message") -> DevOpsContext:
        """From Service Bus application properties (str or bytes keys) and the decoded message body."""
        props = decode_properties(properties)
        missing = [name for name in REQUIRED_PROPERTIES if not str(props.get(name) or "").strip()]
        if missing:
            raise InvalidInputError([Problem(where, f"application_properties.{name}", "missing or empty")
                                     for name in missing])
        check_devops_url(str(props["PlanUrl"]), where=where, field="application_properties.PlanUrl")
        body = body or {}
        build, repository, release, where_in = (_section(body, key)
                                                for key in ("build", "repository", "release", "pipeline"))
        pipeline = PipelineRef(
            stage_name=_text(where_in.get("stage_name")), stage_attempt=_int(_text(where_in.get("stage_attempt"))),
            phase_name=_text(where_in.get("phase_name")), phase_attempt=_int(_text(where_in.get("phase_attempt"))),
            job_name=_text(where_in.get("job_name")), job_attempt=_int(_text(where_in.get("job_attempt"))))
        task = ServerTask.from_properties(props)
        return cls(
            collection_url=str(props["PlanUrl"]).strip(),
            project=str(props["ProjectId"]).strip(),
            token=Secret(str(props["AuthToken"]).strip()),
            build_id=_text(build.get("id")),
            build_number=_text(build.get("number")),
            task=task,
            pipeline=pipeline if any(vars(pipeline).values()) else None,
            release_uri=_text(release.get("uri")),
            release_environment_uri=_text(release.get("environment_uri")),
            commit=_text(repository.get("commit")),
            repository_url=_text(repository.get("url")),
            source="message",
        )

    @classmethod
    def from_message(cls, message: QueueMessage, *, where: str = "message") -> DevOpsContext:
        return cls.from_properties(message.properties, message.body, where=where)

    @classmethod
    def from_message_file(cls, path: Path) -> DevOpsContext:
        """From a message rendered as JSON (`--callback MESSAGE.json`, docs/architecture.md#queue-messages)."""
        return cls.from_message(read_message_file(path), where=str(path))

    @classmethod
    def from_environment(cls, env: Mapping[str, str], *, token: str | None = None) -> DevOpsContext:
        """From a DevOps agent job's predefined variables. The job token is in the environment only when
        the pipeline maps it: `env: {SYSTEM_ACCESSTOKEN: $(System.AccessToken)}` (docs/devops.md)."""
        secret = token if token is not None else env.get("SYSTEM_ACCESSTOKEN", "")
        collection = env.get("SYSTEM_COLLECTIONURI") or env.get("SYSTEM_TEAMFOUNDATIONCOLLECTIONURI") or ""
        project = env.get("SYSTEM_TEAMPROJECTID") or env.get("SYSTEM_TEAMPROJECT") or ""
        problems = [Problem("environment", name, "not set (is this a DevOps agent job?)")
                    for name, value in (("SYSTEM_ACCESSTOKEN", secret), ("SYSTEM_COLLECTIONURI", collection),
                                        ("SYSTEM_TEAMPROJECTID", project)) if not value.strip()]
        if problems:
            raise InvalidInputError(problems)
        check_devops_url(collection, where="environment",
                         field="SYSTEM_COLLECTIONURI" if env.get("SYSTEM_COLLECTIONURI") else "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI")
        pipeline = PipelineRef(
            stage_name=env.get("SYSTEM_STAGENAME") or None, stage_attempt=_int(env.get("SYSTEM_STAGEATTEMPT")),
            phase_name=env.get("SYSTEM_PHASENAME") or None, phase_attempt=_int(env.get("SYSTEM_PHASEATTEMPT")),
            job_name=env.get("SYSTEM_JOBNAME") or None, job_attempt=_int(env.get("SYSTEM_JOBATTEMPT")),
        )
        return cls(
            collection_url=collection.strip(),
            project=project.strip(),
            token=Secret(secret.strip()),
            build_id=env.get("BUILD_BUILDID") or None,
            build_number=env.get("BUILD_BUILDNUMBER") or None,
            pipeline=pipeline if any(vars(pipeline).values()) else None,
            release_uri=env.get("RELEASE_RELEASEURI") or None,
            release_environment_uri=env.get("RELEASE_ENVIRONMENTURI") or None,
            commit=env.get("BUILD_SOURCEVERSION") or None,
            repository_url=env.get("BUILD_REPOSITORY_URI") or None,
            computer_name=env.get("AGENT_MACHINENAME") or None,
            source="environment",
        )

    @classmethod
    def from_options(cls, *, collection_url: str, project: str, token: str, build_id: str | None = None,
                     build_number: str | None = None) -> DevOpsContext:
        problems = [Problem("options", name, "required") for name, value in
                    (("collection_url", collection_url), ("project", project), ("token", token)) if not value]
        if problems:
            raise InvalidInputError(problems)
        check_devops_url(collection_url, where="options", field="collection_url")
        return cls(collection_url=collection_url, project=project, token=Secret(token.strip()),
                   build_id=build_id, build_number=build_number, source="options")

    def without_task(self) -> DevOpsContext:
        """The same target, with nothing to close (e.g. a rerun from the studio whose callback is stale)."""
        from dataclasses import replace

        return replace(self, task=None)


def token_from_file(path: Path) -> str:
    """Read a token from a file named by an option (docs/architecture.md#secrets-policy); the error never quotes the file's content."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidInputError([Problem(str(path), "", f"cannot read the token file ({exc.strerror})")]) from None
    if not token:
        raise InvalidInputError([Problem(str(path), "", "the token file is empty")])
    return token


def _section(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None
