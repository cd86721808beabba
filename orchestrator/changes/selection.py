"""Change-aware selection: which notebooks of a plan the change since a ref can affect, and why.

A notebook is selected when its file changed; when a repository module it imports (transitively), a script
or notebook it runs, or a file or folder it names changed (graph.py); when its resolved settings changed
(plan_diff.py: its orchestrator.yml entry, its metadata, a default it uses, its target or environment); when
its environment's conda file changed; or when a notebook it comes `after` is selected. Notebooks a selected
one comes after still run (its inputs must exist), though nothing they depend on changed.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.changes.code import PathRef
from orchestrator.changes.git import Change, Git
from orchestrator.changes.graph import RepoView, affecting_changes
from orchestrator.changes.plan_diff import load_base_plan, settings_changes
from orchestrator.errors import InvalidInputError
from orchestrator.plan.spec import ResolvedPlan, StepSpec

log = logging.getLogger("orchestrator.changes")


@dataclass(frozen=True)
class Selected:
    notebook: str  # as in results.json: relative to the plan folder
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class NotSelected:
    notebook: str
    reason: str  # "unchanged since REF", the skip reason wherever the run is reported
    # Selected notebooks that come after it: it still runs, for them (the JSON keeps the documented shape;
    # the text output says so).
    runs_for: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    ref: str  # as given
    base: str  # the merge base's commit id
    selected: tuple[Selected, ...]
    not_selected: tuple[NotSelected, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "base": self.base,
            "selected": [{"notebook": item.notebook, "reasons": list(item.reasons)} for item in self.selected],
            "not_selected": [{"notebook": item.notebook, "reason": item.reason} for item in self.not_selected],
        }

    @property
    def skip_reason(self) -> str:
        return unchanged_reason(self.ref)

    def summary(self) -> str:
        total = len(self.selected) + len(self.not_selected)
        needed = sum(1 for item in self.not_selected if item.runs_for)
        extra = f", {needed} more run because selected notebooks come after them" if needed else ""
        return (f"changed since {self.ref} (merge base {self.base[:12]}): {len(self.selected)} of {total} "
                f"notebooks selected{extra}")

    def lines(self, *, not_selected: bool = True) -> list[str]:
        """The selection for a person: the summary, each selected notebook with its reasons, then the others
        (left out of a run's log, where the report lists them as skipped)."""
        out = [self.summary()]
        for item in self.selected:
            out.append(f"  selected      {item.notebook}")
            out.extend(f"      {reason}" for reason in item.reasons)
        for other in self.not_selected if not_selected else ():
            runs = f"; runs anyway: {', '.join(other.runs_for)} come{'s' * (len(other.runs_for) == 1)} after it" \
                if other.runs_for else ""
            out.append(f"  not selected  {other.notebook}: {other.reason}{runs}")
        return out


def unchanged_reason(ref: str) -> str:
    """The skip reason of a notebook the change does not affect: in results.json, the report, JUnit, DevOps."""
    return f"unchanged since {ref}"


def select_changed(plan: ResolvedPlan, ref: str, *, path: Path, plan_file: Path | None = None) -> Selection:
    """The selection for `plan`, loaded from `path` / `plan_file` (as given to load_plan), against the merge
    base of HEAD with `ref`. InvalidInputError (exit 2) for an unknown ref, a missing history, no git."""
    git = Git(plan.root)
    base = git.merge_base(ref, git.resolve(ref))
    return _Selector(git, plan, ref, base, path, plan_file).select()


def select_changed_or_everything(plan: ResolvedPlan, ref: str, *, path: Path) -> Selection:
    """The selection, or every notebook when it cannot be made (the trigger: a run must happen, and the
    reason each notebook gives says why all of them run)."""
    try:
        selection = select_changed(plan, ref, path=path)
    except InvalidInputError as error:
        why = "; ".join(problem.message for problem in error.problems)
        log.warning("changed_since %s: selecting every notebook: %s", ref, why)
        return Selection(ref, "", tuple(Selected(step.notebook, (f"every notebook runs: {why}",))
                                        for step in plan.steps), ())
    log.info("%s", selection.summary())
    return selection


def apply_selection(plan: ResolvedPlan, selection: Selection) -> ResolvedPlan:
    """`plan` with every notebook the selection leaves out skipped as "unchanged since REF", except those a
    selected notebook comes after: they run, so that what they hand on exists."""
    skipped = {item.notebook for item in selection.not_selected if not item.runs_for}
    steps = tuple(
        dataclasses.replace(step, skip=selection.skip_reason) if step.notebook in skipped and step.skip is None
        else step
        for step in plan.steps
    )
    return dataclasses.replace(plan, steps=steps)


class _Selector:
    def __init__(self, git: Git, plan: ResolvedPlan, ref: str, base: str, path: Path,
                 plan_file: Path | None) -> None:
        self.git, self.plan, self.ref, self.base = git, plan, ref, base
        self.path, self.plan_file = path, plan_file
        self.root = git.relative(plan.root)
        changes = git.changes(base)
        files = git.files_now() | {path for path, change in changes.items() if change.status in ("deleted", "renamed")}
        self.view = RepoView(git.top, files, changes, self.show)
        self.plan_shown = plan.plan_file.name if plan.plan_file else "the plan"

    def show(self, repo_path: str) -> str:
        """A repository path as results.json writes notebooks: relative to the plan folder."""
        return posixpath.relpath(repo_path, self.root) if self.root != "." else repo_path

    def repo(self, plan_path: str) -> str:
        return posixpath.normpath(posixpath.join(self.root, plan_path))

    def select(self) -> Selection:
        base_plan = load_base_plan(self.git, self.base, path=self.path, plan_file=self.plan_file)
        reasons: dict[str, list[str]] = {}
        by_id = {step.id: step for step in self.plan.steps}
        for step in self.plan.steps:  # in execution order: every step after the steps it comes after
            found = self._own_reasons(step, base_plan.plan, base_plan.problem)
            found += [f"comes after {by_id[dep].notebook}, which is selected" for dep in step.after
                      if by_id[dep].notebook in reasons]
            if found:
                reasons[step.notebook] = found
        needed_by = self._prerequisites(reasons, by_id)
        return Selection(
            ref=self.ref,
            base=self.base,
            selected=tuple(Selected(nb, tuple(why)) for nb, why in reasons.items()),
            not_selected=tuple(self._not_selected(step.notebook, needed_by.get(step.notebook, ()))
                               for step in self.plan.steps if step.notebook not in reasons),
        )

    def _not_selected(self, notebook: str, runs_for: tuple[str, ...]) -> NotSelected:
        return NotSelected(notebook, unchanged_reason(self.ref), runs_for)

    def _prerequisites(self, reasons: dict[str, list[str]], by_id: dict[str, StepSpec]) -> dict[str, tuple[str, ...]]:
        """Unselected notebooks that selected ones come after (transitively) -> those selected notebooks."""
        needed: dict[str, list[str]] = {}
        for step in reversed(self.plan.steps):
            wanting = [step.notebook] if step.notebook in reasons else needed.get(step.notebook, [])
            for dep in step.after:
                notebook = by_id[dep].notebook
                if notebook not in reasons:
                    for name in wanting:
                        if name not in needed.setdefault(notebook, []):
                            needed[notebook].append(name)
        return {notebook: tuple(names) for notebook, names in needed.items()}

    def _own_reasons(self, step: StepSpec, base_plan: ResolvedPlan | None, problem: str | None) -> list[str]:
        found: list[str] = []
        notebook = self.repo(step.notebook)
        change: Change | None = self.view.changes.get(notebook)
        if change is not None:
            found.append(change.describe(self.show))
        found += self._settings(step, base_plan, problem, notebook_changed=change is not None)
        environment = self.plan.environments.get(step.environment)
        if environment is not None and environment.conda:
            conda = self.repo(environment.conda)
            if conda in self.view.changes:
                found.append(f"its environment {step.environment!r}: {self.view.changes[conda].describe(self.show)}")
        extra = [PathRef(value, f"parameter {name}") for name, value in _strings(step.parameters)]
        found += affecting_changes(self.view, notebook, [self.repo(folder) for folder in step.pythonpath], extra,
                                   plan_root=self.root)
        return found

    def _settings(self, step: StepSpec, base_plan: ResolvedPlan | None, problem: str | None, *,
                  notebook_changed: bool) -> list[str]:
        if base_plan is None:
            return [f"its settings cannot be compared: {problem}"]
        changed = settings_changes(self.plan, base_plan, step)
        if changed is None:
            return [] if notebook_changed else [f"added to {self.plan_shown}"]
        if not changed:
            return []
        where = "its settings changed" if notebook_changed else f"its settings in {self.plan_shown} changed"
        return [f"{where}: {', '.join(changed)}"]


def _strings(value: Any, name: str = "") -> list[tuple[str, str]]:
    """Every string in a parameter value (plan parameters override the notebook's literals)."""
    if isinstance(value, str):
        return [(name, value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _strings(item, f"{name}.{key}" if name else key)]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in _strings(item, name)]
    return []
