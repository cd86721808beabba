"""The two message bodies this queue carries (docs/architecture.md#queue-messages), validated with precise errors.

`kick_off` is written by a person, in a pipeline's `PublishToAzureServiceBus` messageBody, so every mistake is
reported at once with its key path ("body.repository.commit: ..."): the text lands in the DevOps job's log,
where that person reads it. `wrap_up` is written by the orchestrator itself (the watchdog, see watchdog.py).

Strict types: `"only": "examples/**"` (a string, not a list) or `"version": "1"` are refused rather than
guessed at. Unknown keys are refused too, so a typo (`"onyl"`) does not silently run every notebook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.paths import inside_root

JOBS = ("kick_off", "wrap_up")
# A commit id: hex, full (40 for SHA-1, 64 for SHA-256) or abbreviated (then a `ref` must say where to find it).
_COMMIT = re.compile(r"^[0-9a-fA-F]{4,64}$")
# What `git check-ref-format` allows, minus anything that could be read as an option or a revision expression.
_REF = re.compile(r"^(?!-)(?!.*\.\.)(?!.*@\{)(?!.*//)[A-Za-z0-9._/+-]+(?<![./])$")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Repository(_Strict):
    url: str
    commit: str
    ref: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        if value.lstrip().startswith("-"):
            raise ValueError(f"{value[:60]!r} looks like a command-line option, not a repository URL")
        if _BAD_URL_CHARS.search(value):
            raise ValueError("must not contain spaces, control characters or backslashes")
        return value

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str) -> str:
        if not _COMMIT.match(value):
            raise ValueError("expected a commit id: 4 to 64 hexadecimal characters, e.g. $(Build.SourceVersion)")
        return value.lower()

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and not _REF.match(value):
            raise ValueError("expected a git ref such as refs/heads/main or refs/pull/7/merge")
        return value


class Build(_Strict):
    id: Union[str, int, None] = None
    number: Union[str, int, None] = None


class Pipeline(_Strict):
    """Where in a YAML pipeline the server job runs: the test run's pipelineReference (docs/devops.md).
    Attempts as numbers or as the text a `$(System.JobAttempt)` macro gives."""

    stage_name: str | None = None
    stage_attempt: Union[int, str, None] = None
    phase_name: str | None = None
    phase_attempt: Union[int, str, None] = None
    job_name: str | None = None
    job_attempt: Union[int, str, None] = None

    @field_validator("stage_attempt", "phase_attempt", "job_attempt")
    @classmethod
    def _attempt(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError("expected an attempt number, e.g. $(System.JobAttempt)")
        return value


class Release(_Strict):
    uri: str | None = None
    environment_uri: str | None = None


def _relative(value: str, what: str) -> str:
    try:
        return inside_root(value)
    except ValueError as exc:
        raise ValueError(f"{what} must stay inside the repository: {exc}") from None


class KickOff(_Strict):
    job: Literal["kick_off"]
    version: Literal[1]
    repository: Repository
    plan: str = "orchestrator.yml"
    only: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    build: Build | None = None
    release: Release | None = None
    pipeline: Pipeline | None = None
    # A pull request's target branch: run only the notebooks the change since it can affect (docs/changes.md).
    changed_since: str | None = None

    @field_validator("changed_since")
    @classmethod
    def _changed_since(cls, value: str | None) -> str | None:
        if value is not None and not _REF.match(value):
            raise ValueError("expected a branch, tag or commit, e.g. $(System.PullRequest.TargetBranch)")
        return value

    @field_validator("plan")
    @classmethod
    def _plan(cls, value: str) -> str:
        return _relative(value, "the plan")

    @field_validator("only")
    @classmethod
    def _only(cls, value: list[str]) -> list[str]:
        problems = []
        for index, pattern in enumerate(value):
            if pattern.lstrip().startswith("-"):
                problems.append(f"[{index}] {pattern!r} looks like a command-line option")
                continue
            try:
                _relative(pattern, "a glob")
            except ValueError as exc:
                problems.append(f"[{index}] {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise ValueError(f"parameter names must be Python identifiers: {', '.join(map(repr, bad))}")
        return value

    def body_for_context(self) -> dict[str, Any]:
        """What DevOpsContext reads from a body: build, repository, release, pipeline (docs/devops-protocol.md#message-properties, docs/devops-protocol.md#tests-tab)."""
        return self.model_dump(include={"build", "repository", "release", "pipeline"}, exclude_none=True)


class WrapUp(_Strict):
    """A watchdog check, scheduled by the orchestrator after a kick_off (watchdog.py), and signed (signing.py).

    It names no job, no secret and no key: the pipeline job's name, the Key Vault secret's name and the dedupe
    key are all derived from the signed PlanId / JobId / TaskInstanceId properties (watchdog.Watched), so not
    even a correctly signed body could point the watchdog at another team's job or secret."""

    job: Literal["wrap_up"]
    version: Literal[2]            # 1 named its job and secret in the body: such a message is refused
    check: int = Field(ge=1)       # 1 for the first check
    started_at: datetime           # when the kick_off submitted the pipeline
    expected: str                  # the plan's steps, collect.encode_expected: for the backstop report
    title: str = "notebooks"
    closing: bool = False          # the DevOps task was seen completed while the pipeline still ran
    callback: bool = True          # False: `waitForCompletion: false`, no DevOps task waits to be closed
    context_body: dict[str, Any] = Field(default_factory=dict)  # build/repository/release of the kick_off

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)  # written by us: datetimes as text

    @field_validator("started_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


Message = Union[KickOff, WrapUp]


def parse_body(body: Mapping[str, Any], *, where: str = "body") -> Message:
    """The message in `body`, or InvalidInputError listing every problem with its key path."""
    job = body.get("job")
    if job is None:
        raise InvalidInputError([Problem("message", f"{where}.job", f"missing; expected one of {', '.join(JOBS)}")])
    if job not in JOBS:
        raise InvalidInputError([Problem("message", f"{where}.job",
                                         f"{job!r} is not a job this queue handles; expected one of {', '.join(JOBS)}")])
    model: type[KickOff] | type[WrapUp] = KickOff if job == "kick_off" else WrapUp
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        raise InvalidInputError([_problem(error, where) for error in exc.errors()]) from None


def _problem(error: Any, where: str) -> Problem:
    location = ".".join([where, *(f"[{part}]" if isinstance(part, int) else str(part) for part in error["loc"])])
    location = location.replace(".[", "[")
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif kind == "missing":
        message = "missing"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind.endswith("_type") or kind == "literal_error":
        message = f"{message} (got {_type_name(error.get('input'))})"
    return Problem("message", location, message)


def _type_name(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "true/false", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
