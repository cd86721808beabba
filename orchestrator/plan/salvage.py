"""The valid parts of an invalid plan.

When the plan has shape errors we still want its references checked (an unknown target, an `after` naming
no notebook, a cycle), so that `orchestrator validate` lists every problem in one go. These helpers keep
what validates and drop the rest quietly: the dropped parts' problems were already reported.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.plan.models import Defaults, Environment, PlanFile, Target
from orchestrator.plan.paths import inside_root

_M = TypeVar("_M", bound=BaseModel)


def salvage_plan(data: dict[str, Any]) -> PlanFile:
    """The plan's valid parts. Names of invalid targets and environments stay known: no cascade of
    "unknown target" for a target whose only fault is a typo inside it."""
    targets = data.get("targets") if isinstance(data.get("targets"), dict) else {}
    environments = data.get("environments") if isinstance(data.get("environments"), dict) else {}
    experiment = data.get("experiment")
    return PlanFile.model_construct(
        experiment=experiment if isinstance(experiment, str) else None,
        defaults=salvage(Defaults, data.get("defaults", {})) or Defaults(),
        targets={str(k): salvage(Target, v) or Target() for k, v in (targets or {}).items()},
        environments={str(k): salvage(Environment, v) or Environment() for k, v in (environments or {}).items()},
    )


def salvage(model: type[_M], data: Any) -> _M | None:
    """`data` validated, leaving out the keys that have errors; None when the value as a whole is wrong.
    A typo in one setting must not hide problems in the others, such as an unknown target named next to it."""
    while isinstance(data, dict):
        try:
            return model.model_validate(data)
        except ValidationError as error:
            locs = [detail["loc"] for detail in error.errors()]
            bad = {loc[0] for loc in locs if loc}
            if not all(locs) or not bad & data.keys():
                return None  # an error about the whole value, e.g. both path and glob
            data = {key: value for key, value in data.items() if key not in bad}
    return None


def raw_selector(raw: Any) -> tuple[str | None, str | None]:
    """path/glob of an invalid entry, so the notebooks it names still count for `after` checks."""
    if not isinstance(raw, dict):
        return None, None
    found: list[str | None] = []
    for key in ("path", "glob"):
        try:
            found.append(inside_root(raw[key]) if isinstance(raw.get(key), str) else None)
        except ValueError:
            found.append(None)
    return found[0], (found[1] if found[0] is None else None)
