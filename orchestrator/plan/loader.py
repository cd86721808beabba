"""From a folder, plan file or notebook to a `ResolvedPlan` (docs/architecture.md#plan-file), reporting every problem at once.

The order of work: read the plan file (shape errors from the models), select notebooks (entries in order,
glob matches sorted), read each notebook's metadata, check references (targets, environments, files,
`after`), merge the layers, order the steps, then apply `--only` and `--param`. Problems are collected all
the way through and raised together as one PlanError, so `orchestrator validate` lists everything to fix.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.errors import PlanError, Problem
from orchestrator.plan.discovery import find_notebooks, folder_outside, outside_or_not_a_file
from orchestrator.plan.graph import CycleError, execution_order, step_ids, with_prerequisites
from orchestrator.plan.layers import Layer, Merged, merge
from orchestrator.plan.limits import (
    MAX_PARAMETERS_BYTES,
    MAX_PLAN_BYTES,
    MAX_PLAN_PARAMETERS_BYTES,
    json_size,
    show_bytes,
    too_big,
)
from orchestrator.plan.messages import describe, did_you_mean, show
from orchestrator.plan.metadata import METADATA_KEY, read_settings
from orchestrator.plan.models import Defaults, Environment, NotebookEntry, NotebookSettings, PlanFile, Target
from orchestrator.plan.paths import glob_match, inside_root, is_glob
from orchestrator.plan.salvage import raw_selector, salvage, salvage_plan
from orchestrator.plan.sources import Source, display, in_file_order
from orchestrator.plan.spec import ResolvedPlan, StepSpec
from orchestrator.plan.yaml_lines import YamlSyntaxError, load_yaml

PLAN_NAMES = ("orchestrator.yml", "orchestrator.yaml")
BUILTIN_TARGETS = {"cpu": Target(), "gpu": Target(gpus=1)}
BUILTIN_ENVIRONMENTS = {"default": Environment()}

_M = TypeVar("_M", bound=BaseModel)


def load_plan(
    path: Path,
    *,
    plan_file: Path | None = None,
    only: Sequence[str] = (),
    parameters: Mapping[str, Any] | None = None,
) -> ResolvedPlan:
    """Resolve a plan. `path`: a folder (its orchestrator.yml, else every notebook under it), a plan file, or
    one notebook. `plan_file` overrides which plan file (the root is then its folder). `only`: globs of
    notebooks to keep, with the notebooks they come after. `parameters` (`--param`, already typed) merge
    over every step's. Raises PlanError with every problem found."""
    located = _locate(Path(path), plan_file)
    loader = _Loader(located.root, located.plan_file)
    loader.warnings.extend(located.warnings)
    return loader.resolve(located.single, list(only), dict(parameters or {}))


def validate_plan(path: Path, *, plan_file: Path | None = None) -> ResolvedPlan:
    """The checks of `load_plan`, and for each step what would stop it before its first cell when it runs
    (orchestrator/plan/preflight.py), for `orchestrator validate`: raises PlanError listing every problem."""
    from orchestrator.plan.preflight import step_problems

    plan = load_plan(path, plan_file=plan_file)
    problems, warnings = step_problems(plan)
    if problems:
        raise PlanError(problems)
    return dataclasses.replace(plan, warnings=(*plan.warnings, *warnings))


class _Located(NamedTuple):
    root: Path
    plan_file: Path | None
    single: str | None  # the one notebook, when the path given is a notebook
    warnings: list[str]


def _locate(path: Path, plan_file: Path | None) -> _Located:
    if plan_file is not None:
        if not plan_file.exists() and not plan_file.is_symlink():
            raise PlanError([Problem(display(plan_file.absolute()), "", "no such plan file")])
        _check_plan_kind(plan_file)
        plan_file = plan_file.resolve()
        return _Located(plan_file.parent, plan_file, None, [])
    path = path.resolve()
    if path.is_dir():
        # A plan name that is there but no regular file (a dangling link, a folder, a fifo) is refused: ignoring
        # it would run every notebook with defaults, which is not what its author meant.
        found = [_check_plan_kind(path / name) for name in PLAN_NAMES if os.path.lexists(path / name)]
        if len(found) > 1:
            warning = f"{display(path)}: both {' and '.join(PLAN_NAMES)} exist; using {PLAN_NAMES[0]}"
            return _Located(path, found[0], None, [warning])
        return _Located(path, found[0] if found else None, None, [])
    if not path.exists():
        raise PlanError([Problem(display(path), "", "no such file or folder")])
    if path.suffix.lower() == ".ipynb":
        if not path.is_file():  # a fifo would block the first read forever
            raise PlanError([Problem(display(path), "", "expected a notebook file, found no regular file")])
        return _Located(path.parent, None, path.name, [])
    if path.suffix.lower() in (".yml", ".yaml"):
        return _Located(path.parent, _check_plan_kind(path), None, [])
    expected = "expected a folder, a plan file (.yml, .yaml) or a notebook (.ipynb)"
    raise PlanError([Problem(display(path), "", expected)])


def _check_plan_kind(path: Path) -> Path:
    try:
        mode = path.stat().st_mode  # follows links: a link to a plan file is a plan file
    except OSError:
        raise PlanError([Problem(display(path), "", "the plan file is a broken link or cannot be read")]) from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise PlanError([Problem(display(path), "", f"expected a plan file (YAML), found {kind}")])
    return path


class _Loader:
    def __init__(self, root: Path, plan_path: Path | None) -> None:
        self.root = root
        self.plan_path = plan_path
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self._all_notebooks: list[str] | None = None
        shown = display(plan_path) if plan_path else display(root)
        self.source = Source(shown)

    @property
    def all_notebooks(self) -> list[str]:
        # Walked once, and only when something needs it (no `notebooks` key, a glob, a did-you-mean).
        if self._all_notebooks is None:
            found = find_notebooks(self.root)
            self.warnings.extend(f"{display(self.root)}: {why}" for why in found.skipped)
            self._all_notebooks = found.notebooks
        return self._all_notebooks

    # ----------------------------------------------------------------------------------------------- flow

    def resolve(self, single: str | None, only: list[str], parameters: dict[str, Any]) -> ResolvedPlan:
        plan, entries = self._read_plan()
        targets = {**BUILTIN_TARGETS, **plan.targets}
        environments = {**BUILTIN_ENVIRONMENTS, **plan.environments}
        self._check_defaults(plan.defaults, targets, environments)
        self._check_environments(plan.environments)

        if single is not None:
            selection: dict[str, list[Layer]] = {single: []}
        else:
            selection = self._select(entries, targets, environments)
        for notebook, layers in selection.items():
            metadata = self._metadata_layer(notebook)
            if metadata is not None:
                self._check_layer(metadata, targets, environments)
                layers.insert(0, metadata)  # metadata < plan entries
        self._resolve_after(selection)

        merged = {notebook: merge(notebook, plan.defaults, layers) for notebook, layers in selection.items()}
        order = self._order(merged)
        keep = self._only(only, order, merged)
        self._check_parameters(parameters)
        if not selection and not self.problems:
            where = "the plan selects no notebooks" if self.plan_path else "no notebooks (*.ipynb) found here"
            self.problems.append(self.source.problem(where))
        if self.problems:
            raise PlanError(in_file_order(self.problems, self.source.file))

        ids = step_ids(merged)  # over the whole plan, so `--only` never changes an id
        position = {notebook: index for index, notebook in enumerate(order)}
        steps = tuple(
            merged[notebook].to_step(
                ids[notebook],
                after=[ids[dep] for dep in sorted(merged[notebook].after_notebooks(), key=position.__getitem__)],
                cli_parameters=parameters,
            )
            for notebook in order
            if notebook in keep
        )
        self._check_parameter_sizes(steps)
        return ResolvedPlan(
            root=self.root,
            plan_file=self.plan_path,
            experiment=plan.experiment or self.root.name,
            steps=steps,
            targets={name: target.spec(name) for name, target in targets.items()},
            environments={name: environment.spec(name) for name, environment in environments.items()},
            secret_env=tuple(plan.secret_env),
            pass_env=tuple(plan.pass_env),
            isolation=plan.isolation,
            warm_kernels=plan.warm_kernels,
            warnings=tuple(self.warnings),
            pack=plan.pack.spec(),
        )

    # ------------------------------------------------------------------------------------------- the file

    def _read_plan(self) -> tuple[PlanFile, list[tuple[int, NotebookEntry | None, Any]] | None]:
        """The plan (defaults where none) and its notebook entries: (index, entry or None when invalid, raw),
        or None when the plan has no `notebooks` key."""
        if self.plan_path is None:
            return PlanFile(), None
        try:
            size = self.plan_path.stat().st_size
            if size > MAX_PLAN_BYTES:
                message = f"the plan file is {show_bytes(size)}, over the {show_bytes(MAX_PLAN_BYTES)} limit for a plan"
                raise PlanError([self.source.problem(message)])
            text = self.plan_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PlanError([self.source.problem(f"cannot read the plan file ({error})")]) from None
        try:
            document = load_yaml(text)
        except YamlSyntaxError as error:
            where = f"line {error.line}, column {error.column}" if error.line else ""
            raise PlanError([Problem(self.source.file, where, f"invalid YAML: {error.message}")]) from None
        self.source = Source(self.source.file, document)
        data = document.data
        if data is None:
            raise PlanError([self.source.problem(f"the plan file is empty; expected a mapping with keys {_keys()}")])
        if not isinstance(data, dict):
            raise PlanError([self.source.problem(f"expected a mapping with keys {_keys()}, got {show(data)}")])
        for loc, _line in document.duplicates:
            self.problems.append(
                self.source.problem(
                    f"duplicate key {loc[-1]!r}: the later value would silently replace the earlier", *loc
                )
            )
        plan = self._validate(PlanFile, data, self.source) or salvage_plan(data)
        raw_entries = data.get("notebooks")
        if "notebooks" not in data or not isinstance(raw_entries, list):
            return plan, (None if "notebooks" not in data else [])
        valid: list[NotebookEntry | None] = (
            list(plan.notebooks)  # the whole file validated
            if plan.notebooks is not None
            else [salvage(NotebookEntry, raw) for raw in raw_entries]
        )
        return plan, [(index, entry, raw) for index, (entry, raw) in enumerate(zip(valid, raw_entries, strict=True))]

    def _validate(self, model: type[_M], data: Any, source: Source) -> _M | None:
        try:
            return model.model_validate(data)
        except ValidationError as error:
            for detail in error.errors():
                loc, message = describe(detail, model)
                self.problems.append(source.problem(message, *loc))
            return None

    def _check_defaults(self, defaults: Defaults, targets: Mapping[str, Any], environments: Mapping[str, Any]) -> None:
        source = self.source.at("defaults")
        self._check_name("target", defaults.target, targets, source)
        self._check_name("environment", defaults.environment, environments, source)
        self._check_pythonpath(defaults.pythonpath, source)

    def _check_environments(self, environments: Mapping[str, Environment]) -> None:
        for name, environment in environments.items():
            if environment.conda is not None and not (self.root / environment.conda).is_file():
                self.problems.append(
                    self.source.problem(
                        f"expected a conda file relative to the plan folder, got {environment.conda!r}: no such file",
                        "environments", name, "conda",
                    )
                )  # fmt: skip

    # -------------------------------------------------------------------------------------------- notebooks

    def _select(
        self,
        entries: list[tuple[int, NotebookEntry | None, Any]] | None,
        targets: Mapping[str, Any],
        environments: Mapping[str, Any],
    ) -> dict[str, list[Layer]]:
        """notebook -> the entries naming it, in order; notebooks in discovery order."""
        if entries is None:
            return {notebook: [] for notebook in self.all_notebooks}
        selection: dict[str, list[Layer]] = {}
        for index, entry, raw in entries:
            source = self.source.at("notebooks", index)
            path, glob = (entry.path, entry.glob) if entry else raw_selector(raw)
            if path is not None:
                matched = [path] if self._notebook_exists(path, source.at("path")) else []
            elif glob is not None:
                matched = glob_match(glob, self.all_notebooks)
                if not matched and entry is not None:
                    self.warnings.append(str(source.problem(f"{glob!r} matches no notebook", "glob")))
            else:
                continue
            layer = Layer(entry, source, selects_by_glob=glob is not None) if entry is not None else None
            if layer is not None:
                self._check_layer(layer, targets, environments)
            for notebook in matched:
                layers = selection.setdefault(notebook, [])
                if layer is not None:
                    layers.append(layer)
        return selection

    def _notebook_exists(self, path: str, source: Source) -> bool:
        full = self.root / path
        if full.is_dir():
            message = f"{path!r} is a folder; use glob: {path + '/**'!r} for the notebooks in it"
        elif not path.lower().endswith(".ipynb"):
            message = f"expected a notebook (.ipynb), got {path!r}"
        elif not full.is_file():
            message = f"no such notebook: {path!r}{_similar_notebook(path, self.all_notebooks)}"
        elif why := outside_or_not_a_file(self.root, path):
            message = f"expected a notebook inside the plan folder; {path!r}: {why}"
        else:
            return True
        self.problems.append(source.problem(message))
        return False

    def _metadata_layer(self, notebook: str) -> Layer | None:
        raw, warning = read_settings(self.root / notebook)
        source = Source(display(self.root / notebook), None, ("metadata", METADATA_KEY))
        if warning:
            self.warnings.append(f"{source.file}: {warning}")
        if raw is None:
            return None
        settings = self._validate(NotebookSettings, raw, source) or salvage(NotebookSettings, raw)
        return Layer(settings, source) if settings is not None else None

    def _check_layer(self, layer: Layer, targets: Mapping[str, Any], environments: Mapping[str, Any]) -> None:
        settings, written = layer.settings, layer.settings.model_fields_set
        if "target" in written and settings.target is not None:
            self._check_name("target", settings.target, targets, layer.source)
        if "environment" in written and settings.environment is not None:
            self._check_name("environment", settings.environment, environments, layer.source)
        self._check_pythonpath(settings.pythonpath or [], layer.source)

    def _check_name(self, key: str, name: str, known: Mapping[str, Any], source: Source) -> None:
        if name not in known:
            hint = did_you_mean(name, list(known), list_choices=False)
            plural = "targets" if key == "target" else "environments"
            self.problems.append(
                source.problem(
                    f"unknown {key} {name!r}{hint}; expected one of: {', '.join(known)} (or declare it under {plural})",
                    key,
                )
            )

    def _check_pythonpath(self, folders: list[str], source: Source) -> None:
        for index, folder in enumerate(folders):
            if not (self.root / folder).is_dir():
                self.warnings.append(
                    str(source.problem(f"pythonpath folder {folder!r} does not exist", "pythonpath", index))
                )
            elif why := folder_outside(self.root, folder):
                message = f"expected a folder inside the plan folder; {folder!r}: {why}"
                self.problems.append(source.problem(message, "pythonpath", index))

    # ------------------------------------------------------------------------------------------------ after

    def _resolve_after(self, selection: dict[str, list[Layer]]) -> None:
        """Fill each layer's `after` with the notebooks its patterns name; every pattern must name some."""
        in_plan = list(selection)
        done: set[int] = set()
        for layers in selection.values():
            for layer in layers:
                if id(layer) in done:  # an entry's layer is shared by all the notebooks its glob matched
                    continue
                done.add(id(layer))
                for index, pattern in enumerate(layer.settings.after or []):
                    layer.after.append(
                        (self._after_targets(pattern, in_plan, layer.source.at("after", index)), is_glob(pattern))
                    )

    def _after_targets(self, pattern: str, in_plan: list[str], source: Source) -> list[str]:
        try:
            normal = inside_root(pattern)
        except ValueError as error:
            self.problems.append(source.problem(str(error)))
            return []
        matched = glob_match(normal, in_plan)
        if not matched:
            hint = _similar_notebook(normal, in_plan)
            self.problems.append(source.problem(f"{pattern!r} names no notebook in the plan{hint}"))
        return matched

    def _order(self, merged: Mapping[str, Merged]) -> list[str]:
        try:
            return execution_order(list(merged), {nb: m.after_notebooks() for nb, m in merged.items()})
        except CycleError as error:
            for cycle in error.cycles:
                # Reported where the cycle's first link was written.
                first, second = cycle[0], cycle[1]
                where = next(src for dep, src in merged[first].after if dep == second)
                self.problems.append(
                    where.problem(f"`after` makes a cycle (each runs after the next): {' -> '.join(cycle)}")
                )
            return list(merged)

    # ---------------------------------------------------------------------------------------- command line

    def _only(self, only: list[str], order: list[str], merged: Mapping[str, Merged]) -> set[str]:
        """The notebooks `--only` keeps, with everything they come after (transitively)."""
        if not only:
            return set(order)
        keep: set[str] = set()
        for pattern in only:
            try:
                matched = glob_match(inside_root(pattern), order)
            except ValueError as error:
                self.problems.append(Problem("--only", repr(pattern), str(error)))
                continue
            if not matched:
                self.problems.append(Problem("--only", repr(pattern), "matches no notebook in the plan"))
            keep.update(matched)
        return with_prerequisites(keep, {notebook: m.after_notebooks() for notebook, m in merged.items()})

    def _check_parameter_sizes(self, steps: Sequence[StepSpec]) -> None:
        """Each step's merged parameters, and all of them together, within the limits (limits.py): they are
        repeated in plan.json, the report and each pipeline step, so a plan that copies a large value into
        every step would cost gigabytes there."""
        budget = MAX_PLAN_PARAMETERS_BYTES
        for step in steps:
            size = json_size(step.parameters, min(budget, MAX_PARAMETERS_BYTES))
            if size > MAX_PARAMETERS_BYTES:
                problem = Problem(step.notebook, "parameters", too_big("its merged parameters", MAX_PARAMETERS_BYTES))
                raise PlanError([problem])
            budget -= size
            if budget < 0:
                raise PlanError([self.source.problem(too_big("the steps' parameters together", MAX_PLAN_PARAMETERS_BYTES))])

    def _check_parameters(self, parameters: Mapping[str, Any]) -> None:
        for name in parameters:
            if not name.isidentifier() or keyword.iskeyword(name):
                self.problems.append(Problem("--param", name, "expected a parameter name that is a Python identifier"))


# ------------------------------------------------------------------------------------------------- helpers


def _similar_notebook(path: str, notebooks: list[str]) -> str:
    # Notebook paths share ".ipynb" and folder names, which makes unrelated ones look alike at difflib's
    # default cutoff; only a near miss (a typo) is worth suggesting.
    return did_you_mean(path, notebooks, list_choices=False, cutoff=0.85)


def _keys() -> str:
    return ", ".join(PlanFile.model_fields)
