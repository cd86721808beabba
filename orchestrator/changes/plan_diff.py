"""Which notebooks' settings changed: the plan resolved at the merge base against the plan resolved now.

Comparing resolved steps (not the YAML text) answers the real question: a new default that a notebook's own
entry overrides changes nothing for it; a glob entry edited for `models/**` changes only the notebooks under
models/; a setting moved from orchestrator.yml into a notebook's metadata without a new value changes nothing.

The plan at the base is loaded from a skeleton of the base commit: the plan file and the notebooks under its
folder (their metadata holds settings), read with one `git cat-file --batch`, and an empty file for each
conda file the plan names (the loader only checks that it exists). Nothing else is written out, so this
stays fast in repositories full of data files.
"""

from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.changes.git import Git
from orchestrator.errors import InvalidInputError
from orchestrator.plan import ResolvedPlan, StepSpec, load_plan
from orchestrator.plan.loader import PLAN_NAMES

# StepSpec field -> the key a person writes in orchestrator.yml
_SETTINGS = {"target": "target", "environment": "environment", "kernel": "kernel", "timeout_s": "timeout",
             "cell_timeout_s": "cell_timeout", "retries": "retries", "parameters": "parameters",
             "expect": "expect", "after": "after", "skip": "skip", "pythonpath": "pythonpath",
             "output_limit_bytes": "output_limit", "kernel_required": "kernel"}


@dataclass(frozen=True)
class BasePlan:
    plan: ResolvedPlan | None
    problem: str | None = None  # why the plan at the base could not be resolved


def load_base_plan(git: Git, base: str, *, path: Path, plan_file: Path | None) -> BasePlan:
    """The plan as `load_plan(path, plan_file=plan_file)` resolves it at commit `base`."""
    files = set(git.files_at(base))
    wanted_path = git.relative(path)
    wanted_plan = git.relative(plan_file) if plan_file is not None else None
    root = posixpath.dirname(wanted_plan) if wanted_plan else wanted_path if path.is_dir() else \
        posixpath.dirname(wanted_path)
    plans = [name for name in (wanted_plan, wanted_path, *(_join(root, plan) for plan in PLAN_NAMES))
             if name in files]
    notebooks = [name for name in files if name.endswith(".ipynb") and _below(name, root)]
    contents = git.read_at(base, [*dict.fromkeys(plans), *notebooks])
    # The loader checks that a conda file exists, nothing more: those get an empty file, nothing else does.
    for plan_text in (contents.get(name, b"") for name in plans):
        for conda in _conda_files(plan_text):
            if _join(root, conda) in files:
                contents.setdefault(_join(root, conda), b"")
    with tempfile.TemporaryDirectory(prefix="orchestrator-base-") as scratch:
        tree = Path(scratch)
        for name, content in contents.items():
            target = tree / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        (tree / root).mkdir(parents=True, exist_ok=True)
        base_path = tree / wanted_path
        base_plan_file = tree / wanted_plan if wanted_plan is not None else None
        if base_plan_file is not None and not base_plan_file.is_file():
            return BasePlan(None, f"{wanted_plan} does not exist at the base")
        if not base_path.exists():
            return BasePlan(None, f"{wanted_path} does not exist at the base")
        try:
            plan = load_plan(base_path, plan_file=base_plan_file)
        except InvalidInputError as error:
            first = str(error.problems[0]).replace(str(tree) + "/", "") if error.problems else str(error)
            return BasePlan(None, f"the plan at the base does not load ({first})")
        return BasePlan(plan)


def _conda_files(plan_text: bytes) -> list[str]:
    """The conda files a plan's environments name (the plan is validated properly by the loader)."""
    try:
        data = yaml.safe_load(plan_text)
    except yaml.YAMLError:
        return []
    environments = data.get("environments") if isinstance(data, dict) else None
    if not isinstance(environments, dict):
        return []
    return [env["conda"] for env in environments.values() if isinstance(env, dict) and isinstance(env.get("conda"), str)]


def _join(root: str, name: str) -> str:
    return posixpath.normpath(posixpath.join(root, name))


def _below(name: str, root: str) -> bool:
    return root in ("", ".") or name.startswith(root + "/")


def settings_changes(now: ResolvedPlan, base: ResolvedPlan, step: StepSpec) -> list[str] | None:
    """The settings of `step` that differ from the base plan's (their plan keys), or None when the base plan
    has no such notebook."""
    before = next((other for other in base.steps if other.notebook == step.notebook), None)
    if before is None:
        return None
    changed: list[str] = []
    for field, key in _SETTINGS.items():
        if _value(now, step, field) != _value(base, before, field) and key not in changed:
            changed.append(key)
    if now.targets.get(step.target) != base.targets.get(before.target) and "target" not in changed:
        changed.append(f"target {step.target!r}")
    if now.environments.get(step.environment) != base.environments.get(before.environment) \
            and "environment" not in changed:
        changed.append(f"environment {step.environment!r}")
    for key in ("secret_env", "pass_env", "isolation"):  # what every kernel's environment and confinement are
        if getattr(now, key) != getattr(base, key):
            changed.append(key)
    return changed


def _value(plan: ResolvedPlan, step: StepSpec, field: str) -> Any:
    value = getattr(step, field)
    if field == "after":  # ids are slugs of paths; compare the notebooks themselves
        return sorted(plan.step(step_id).notebook for step_id in value if _has(plan, step_id))
    return value


def _has(plan: ResolvedPlan, step_id: str) -> bool:
    return any(step.id == step_id for step in plan.steps)
