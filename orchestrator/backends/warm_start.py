"""The warm parent of a local run's first kernel, started as soon as the plan is known (steps/_warm.py).

A kernel forked from a warm parent costs little once the parent has imported ipykernel; the parent's own imports
are what a one-notebook run waits for. Started here, before the orchestrator imports its backend, jupyter_client
and nbformat and sets up the run folder, they overlap that work instead of following it. So this module imports
none of those: the kernelspec is read from its kernel.json, the environment is the secret policy's result.

It is a guess of what the first notebook will need. A wrong guess (another kernel, a kernelspec found where this
lookup does not look) costs one unused parent, ended with the run: the run's pool forks only from a parent whose
command line and environment equal the kernel's own (steps/_warm.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from orchestrator.plan.spec import ResolvedPlan, StepSpec

_NATIVE = "python3"  # ipykernel's own kernelspec, which jupyter_client provides when no kernel.json overrides it


def start_warm_parent(plan: ResolvedPlan, carried: Collection[str] = ()) -> bool:
    """Start the parent the first notebook to run will fork from; False when none is started (warm kernels off, no
    notebook to run, a kernel that starts cold)."""
    if not plan.warm_kernels:
        return False
    first = next((step for step in plan.steps if step.skip is None and step.id not in carried and not step.after),
                 None)
    if first is None:
        return False
    argv = _kernel_argv(_kernel_name(plan.root, first))
    if argv is None:
        return False
    from steps import _env_policy, _warm

    env, _ = _env_policy.kernel_environment(os.environ, pythonpath=[plan.root / folder for folder in first.pythonpath],
                                            policy=_env_policy.EnvPolicy.of(plan.secret_env, plan.pass_env))
    return _warm.start_early(argv, env, plan.root)


def _kernel_name(root: Path, step: StepSpec) -> str:
    """The kernel steps/run_notebook.py will choose, in the common cases: the plan's when it names one, else the
    notebook's own when installed."""
    if step.kernel_required:
        return step.kernel
    try:
        with open(root / step.notebook, encoding="utf-8") as file:
            named = json.load(file).get("metadata", {}).get("kernelspec", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return step.kernel
    if isinstance(named, str) and named:
        for name in (named, _NATIVE if named == "python" else ""):
            if name and _kernel_argv(name) is not None:
                return name
    return step.kernel


def _kernel_argv(name: str) -> list[str] | None:
    """The argv of kernelspec `name` where jupyter_client looks first (its kernel folders, then ipykernel's own
    python3); None if not found there."""
    from orchestrator.backends.kernel_dirs import kernel_dirs

    for folder in map(Path, kernel_dirs()):
        try:
            spec: Any = json.loads((folder / name.lower() / "kernel.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        argv = spec.get("argv") if isinstance(spec, dict) else None
        return [str(part) for part in argv] if isinstance(argv, list) and argv else None
    if name == _NATIVE:
        return [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return None
