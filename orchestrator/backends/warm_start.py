"""The warm parent of a local run's first kernel, started as soon as the plan is known (steps/_warm.py).

A kernel forked from a warm parent costs little once the parent has imported ipykernel; the parent's own imports
are what a one-notebook run waits for. Started here, before the orchestrator imports its backend and sets up the
run folder, they overlap that work instead of following it. Light on purpose: only the kernelspec lookup and the
secret policy, which every kernel start needs anyway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path

from orchestrator.plan.spec import ResolvedPlan, StepSpec


def start_warm_parent(plan: ResolvedPlan, carried: Collection[str] = ()) -> bool:
    """Start the parent the first notebook to run will fork from; False when none is started (warm kernels off, no
    notebook to run, a kernel that starts cold). A guess that turns out wrong costs one unused parent, ended at
    the run's end."""
    if not plan.warm_kernels:
        return False
    first = next((step for step in plan.steps if step.skip is None and step.id not in carried and not step.after),
                 None)
    if first is None:
        return False
    from steps import _env_policy, _isolation, _kernel, _warm

    spec = _kernel.find_kernelspec(_kernel_name(plan.root, first))
    if spec is None:
        return False
    env, _ = _kernel.kernel_environment(os.environ, pythonpath=[plan.root / folder for folder in first.pythonpath],
                                        policy=_env_policy.EnvPolicy.of(plan.secret_env, plan.pass_env))
    return _warm.start_early(spec, env, _isolation.detect(), plan.root)


def _kernel_name(root: Path, step: StepSpec) -> str:
    """The kernel steps/run_notebook.py will choose, in the common cases: the plan's when it names one, else the
    notebook's own when installed (read from its metadata without nbformat, which is slower to import)."""
    if step.kernel_required:
        return step.kernel
    from steps import _kernel

    try:
        with open(root / step.notebook, encoding="utf-8") as file:
            named = json.load(file).get("metadata", {}).get("kernelspec", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return step.kernel
    if isinstance(named, str) and named:
        for name in (named, "python3" if named == "python" else ""):
            if name and _kernel.find_kernelspec(name) is not None:
                return name
    return step.kernel
