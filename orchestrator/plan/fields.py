"""Value types of plan settings: how each is parsed, what its error says, and its JSON Schema.

Each validator raises ValueError with an "expected ..., got ..." message, which the loader reports as is.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from orchestrator.plan.durations import DURATION_HINT, SIZE_HINT, parse_duration, parse_size
from orchestrator.plan.limits import MAX_PARAMETERS_BYTES, json_size, too_big
from orchestrator.plan.messages import show
from orchestrator.plan.paths import inside_root, relative_file
from orchestrator.plan.rules import RULE_HINT, RULE_PATTERN, check_rule


def _skip(value: Any) -> Any:
    if value is True:
        return "skipped by the plan"
    if value is False or value is None:
        return None  # `skip: false` in a later entry un-skips a notebook an earlier glob skipped
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"expected a reason (a string) or true, got {show(value)}")


def _slots(value: Any) -> Any:
    if value == "auto" or value is None:
        return None  # one slot per CPU core, decided by the local backend
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"expected auto or a whole number >= 1, got {show(value)}")


def _parameters(value: dict[str, Any]) -> dict[str, Any]:
    # Measured first: an alias bomb under `parameters` must cost nothing more below.
    if json_size(value, MAX_PARAMETERS_BYTES) > MAX_PARAMETERS_BYTES:
        raise ValueError(too_big("these parameters", MAX_PARAMETERS_BYTES))
    wrong: list[str] = []
    for name, item in value.items():
        # papermill injects `name = value` into a cell, so a name must be a valid Python variable.
        if not name.isidentifier() or keyword.iskeyword(name):
            wrong.append(f"expected parameter names that are Python identifiers, got {name!r}")
        try:
            _check_json(item, name)
        except ValueError as error:
            wrong.append(str(error))
    if wrong:
        raise ValueError("; ".join(wrong))
    return value


# Deeper than any real parameter, shallow enough for the recursion below and for papermill's own.
MAX_PARAMETER_DEPTH = 50


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    # Parameters travel as JSON (step contract, pipeline inputs); YAML also makes dates, sets and bytes.
    if depth > MAX_PARAMETER_DEPTH:
        raise ValueError(f"expected values nested at most {MAX_PARAMETER_DEPTH} levels deep in {where}")
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"expected string keys in {where}, got {show(key)}")
            _check_json(item, f"{where}.{key}", depth + 1)
        return
    raise ValueError(
        f"expected a string, number, true/false, null, list or mapping in {where}, "
        f"got {type(value).__name__} {value!s} (quote it to pass a string)"
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"expected an environment variable name (letters, digits, _), got {show(value)}")
    return value


def passed_env_name(value: str) -> str:
    """A pass_env entry: a variable name the secret policy (steps/_env_policy.py) lets a plan pass through."""
    from steps._env_policy import is_orchestrator_credential

    if is_orchestrator_credential(value):
        raise ValueError(f"{value} is one of the orchestrator's own credentials (DevOps token, Azure identity, "
                         "Service Bus connection, trigger setting) and is never passed to a notebook")
    return value


_AML_ENVIRONMENT = re.compile(r"^(azureml:)?[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+|@latest)$")


def aml_environment(value: str) -> str:
    if not _AML_ENVIRONMENT.match(value):
        raise ValueError(f"expected a registered environment as name:version or name@latest, got {show(value)}")
    return value


# The same language as durations.parse_duration, for editors: "90", "90s", "1h30m", "1.5h".
_DURATION_PATTERN = (
    r"^(?=.*\d)\s*(\d+(\.\d+)?|(\d+(\.\d+)?\s*[dD])?\s*(\d+(\.\d+)?\s*[hH])?\s*"
    r"(\d+(\.\d+)?\s*[mM])?\s*(\d+(\.\d+)?\s*[sS])?)\s*$"
)


def _number_or_text(number: dict[str, object], pattern: str, hint: str) -> WithJsonSchema:
    """The JSON schema of a field written as a number or as text with a unit ("90s", "2 MiB")."""
    return WithJsonSchema({"anyOf": [number, {"type": "string", "pattern": pattern}], "description": f"Expected {hint}."})


Duration = Annotated[float, BeforeValidator(parse_duration),
                     _number_or_text({"type": "number", "exclusiveMinimum": 0}, _DURATION_PATTERN, DURATION_HINT)]
Size = Annotated[int, BeforeValidator(parse_size),
                 _number_or_text({"type": "integer", "minimum": 1},
                                 r"^\s*(\d+(\.\d+)?|\.\d+)\s*(([kKmMgG][iI]?)?[bB])?\s*$", SIZE_HINT)]
Rule = Annotated[
    str,
    BeforeValidator(check_rule),
    WithJsonSchema({"type": "string", "pattern": RULE_PATTERN, "description": f"Expected {RULE_HINT}."}),
]
Parameters = Annotated[dict[str, Any], AfterValidator(_parameters)]
RelativePath = Annotated[str, AfterValidator(inside_root)]
RelativeFile = Annotated[str, AfterValidator(relative_file)]
EnvName = Annotated[str, AfterValidator(env_name)]
PassedEnvName = Annotated[str, AfterValidator(env_name), AfterValidator(passed_env_name)]
AmlEnvironment = Annotated[str, AfterValidator(aml_environment)]
Skip = Annotated[
    str | None,
    BeforeValidator(_skip),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "boolean"}]}),
]
Slots = Annotated[
    int | None,
    BeforeValidator(_slots),
    WithJsonSchema({"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1}]}),
]


def reject_null(value: Any) -> Any:
    if value is None:
        raise ValueError("expected a value, got null (leave the key out to keep the default)")
    return value


def not_null(schema: dict[str, Any]) -> None:
    """JSON Schema of an optional setting without its `null` branch: `target: null` is not allowed."""
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    schema.pop("default", None)
