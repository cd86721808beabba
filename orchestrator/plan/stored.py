"""Reading back a resolved plan from a run folder's plan.json (`orchestrator rerun`), as strictly as
orchestrator.yml is read.

A run folder is written by the notebooks it runs as much as by us: a notebook can rewrite plan.json before
a repair run reads it. So nothing in it is trusted: every field is type-checked (the models are generated
from the spec dataclasses, so they cannot drift), step ids must be names (they become folder names), every
notebook and pythonpath folder must resolve inside the plan root, and `after` may name only steps that
come earlier, which also rules out cycles and unknown ids.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.discovery import folder_outside, outside_or_not_a_file
from orchestrator.plan.fields import Parameters, RelativePath, Rule
from orchestrator.plan.limits import MAX_PLAN_JSON_BYTES, MAX_RETRIES, show_bytes
from orchestrator.plan.messages import key_path
from orchestrator.plan.spec import EnvironmentSpec, ResolvedPlan, StepSpec, TargetSpec

PLAN_JSON_SCHEMA = 1
_STEP_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # what plan/graph.py's slug makes


def _step_id(value: str) -> str:
    if not _STEP_ID.match(value):
        raise ValueError(f"expected a step id (letters, digits, _), got {value!r}")
    return value


def _seconds(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"expected a number of seconds > 0, or null, got {value!r}")
    return value


_OVERRIDES: dict[str, Any] = {
    "id": Annotated[str, AfterValidator(_step_id)],
    "notebook": RelativePath,
    "after": tuple[Annotated[str, AfterValidator(_step_id)], ...],
    "pythonpath": tuple[RelativePath, ...],
    "parameters": Parameters,
    "expect": dict[str, Rule],
    "retries": Annotated[int, Field(ge=0, le=MAX_RETRIES)],
    "timeout_s": Annotated[float | None, AfterValidator(_seconds)],
    "cell_timeout_s": Annotated[float | None, AfterValidator(_seconds)],
    "output_limit_bytes": Annotated[int, Field(ge=1)],
    "gpus": Annotated[int, Field(ge=0)],
    "local_slots": Annotated[int | None, Field(ge=1)],
    "kernel": Annotated[str, Field(min_length=1)],
}


def _model_of(spec: type[Any], **nested: Any) -> type[BaseModel]:
    """A strict pydantic model with the fields of the dataclass `spec` (checked types, our overrides)."""
    hints = typing.get_type_hints(spec)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(spec):
        annotation = nested.get(field.name, _OVERRIDES.get(field.name, hints[field.name]))
        if field.default is not dataclasses.MISSING:
            fields[field.name] = (annotation, field.default)
        elif field.default_factory is not dataclasses.MISSING:
            fields[field.name] = (annotation, Field(default_factory=field.default_factory))
        else:
            fields[field.name] = (annotation, ...)
    config = ConfigDict(strict=True, extra="forbid")
    return create_model(f"Stored{spec.__name__}", __config__=config, **fields)


_Step = _model_of(StepSpec)
_Target = _model_of(TargetSpec)
_Environment = _model_of(EnvironmentSpec)
_Plan = _model_of(
    ResolvedPlan,
    steps=tuple[_Step, ...],  # type: ignore[valid-type]
    targets=dict[str, _Target],  # type: ignore[valid-type]
    environments=dict[str, _Environment],  # type: ignore[valid-type]
)
_File = create_model("StoredPlanFile", __base__=_Plan, schema_=(typing.Literal[1], Field(alias="schema")))


def read_stored_plan(path: Path) -> ResolvedPlan:
    """The plan in `path` (a run folder's plan.json); InvalidInputError listing every problem."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_PLAN_JSON_BYTES:
            raise InvalidInputError([Problem(where, "", f"{show_bytes(size)}, over the {show_bytes(MAX_PLAN_JSON_BYTES)} limit")])
        text = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError([Problem(where, "", "not found: is this a run folder?")]) from None
    except OSError as error:
        raise InvalidInputError([Problem(where, "", f"cannot be read ({error.strerror or error})")]) from None
    try:
        stored = _File.model_validate_json(text)
    except ValidationError as error:
        problems = [Problem(where, key_path(tuple(d["loc"])), _message(d)) for d in error.errors()]
        raise InvalidInputError(problems[:20]) from None
    except RecursionError:
        raise InvalidInputError([Problem(where, "", "nested too deep to be a plan")]) from None
    data = stored.model_dump(exclude={"schema_"})
    plan = ResolvedPlan(**{
        **data,
        "steps": tuple(StepSpec(**step) for step in data["steps"]),
        "targets": {name: TargetSpec(**target) for name, target in data["targets"].items()},
        "environments": {name: EnvironmentSpec(**env) for name, env in data["environments"].items()},
    })
    found = _cross_check(plan)
    if found:
        raise InvalidInputError([Problem(where, location, message) for location, message in found])
    return plan


def _message(detail: Any) -> str:
    message = str(detail.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def _cross_check(plan: ResolvedPlan) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not plan.root.is_absolute():
        problems.append(("root", f"expected an absolute folder, got {str(plan.root)!r}"))
    elif not plan.root.is_dir():
        problems.append(("root", f"the notebook folder {plan.root} no longer exists"))
        return problems
    earlier: set[str] = set()
    for index, step in enumerate(plan.steps):
        at = f"steps[{index}]"
        if step.id in earlier:
            problems.append((f"{at}.id", f"step id {step.id!r} appears twice"))
        for dep in step.after:
            if dep not in earlier:
                problems.append((f"{at}.after", f"{dep!r} is not a step that comes before {step.id!r} "
                                                "(unknown, later, or a cycle)"))
        if plan.root.is_absolute() and (why := outside_or_not_a_file(plan.root, step.notebook)) and "outside" in why:
            problems.append((f"{at}.notebook", f"{step.notebook!r}: {why}"))
        for number, folder in enumerate(step.pythonpath):
            if plan.root.is_absolute() and (why := folder_outside(plan.root, folder)):
                problems.append((f"{at}.pythonpath[{number}]", f"{folder!r}: {why}"))
        if step.target not in plan.targets:
            problems.append((f"{at}.target", f"unknown target {step.target!r}"))
        if step.environment not in plan.environments:
            problems.append((f"{at}.environment", f"unknown environment {step.environment!r}"))
        earlier.add(step.id)
    return problems
