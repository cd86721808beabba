"""What `orchestrator validate` checks beyond the plan: for every step, what would stop it before its first
cell when it runs (an unreadable or schema-invalid notebook, nbformat 2, a truncated file, no kernel to run
it, parameters that cannot be written, an invalid rule). It calls the step runner's own checks
(steps/run_notebook.py, `preflight`), so validate and run can never disagree."""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import Problem
from orchestrator.plan.sources import display
from orchestrator.plan.spec import ResolvedPlan


def step_problems(plan: ResolvedPlan) -> tuple[list[Problem], list[str]]:
    """(problems, warnings) of the plan's steps that are not skipped, one problem per step at most."""
    from steps import _kernel, run_notebook

    problems: list[Problem] = []
    warnings: list[str] = []
    for step in plan.steps:
        if step.skip is not None:
            continue
        path = plan.root / step.notebook
        request = run_notebook.StepRequest(
            notebook_path=path, output_dir=Path("unused"), step=step.id, notebook_rel=step.notebook,
            parameters=dict(step.parameters), kernel=step.kernel, kernel_required=step.kernel_required,
            expect=dict(step.expect),
        )
        shown = display(path)
        try:
            problem, notes = run_notebook.preflight(request)
        except RecursionError:
            problem, notes = "nested too deep to be read as a notebook", []
        warnings.extend(f"{shown}: {note}" for note in notes)
        if problem is not None:
            # The runner's messages name the file first; the Problem does that here.
            problems.append(Problem(shown, "", problem.removeprefix(f"{path}: ")))
    # A fallback kernel no notebook needed today is still worth a word: the next notebook without its kernel
    # will need it.
    for kernel in sorted({s.kernel for s in plan.steps if s.skip is None and not s.kernel_required}):
        if _kernel.find_kernelspec(kernel) is None:
            warnings.append(f"the plan's kernel {kernel!r} (used when a notebook's own kernel is missing) is not "
                            "installed here")
    return problems, warnings
