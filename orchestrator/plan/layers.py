"""Merging a notebook's settings: defaults < notebook metadata < plan entries in order (docs/architecture.md#plan-file).

A later layer overrides only the keys it writes; `parameters` and `expect` merge key by key, and `after`
accumulates, so `glob: examples/**` with defaults for all and `path: examples/01.ipynb` with one more
parameter compose the way a reader of the plan expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.plan.models import Defaults, NotebookSettings
from orchestrator.plan.sources import Source
from orchestrator.plan.spec import StepSpec

# Keys a later layer simply replaces.
_REPLACED = ("target", "environment", "timeout", "cell_timeout", "retries", "kernel", "skip", "pythonpath",
             "output_limit", "expected_duration", "pack")  # fmt: skip


@dataclass
class Layer:
    settings: NotebookSettings
    source: Source  # where these settings were written, for problems about them
    selects_by_glob: bool = False  # a `glob:` entry: its settings apply to many notebooks
    # `after` patterns resolved to notebooks (one list per pattern), filled in once the plan's notebooks are
    # known. Where a glob is involved (`glob: nbs/*` with `after: [nbs/setup.ipynb]`), a notebook does not wait
    # on itself; a notebook that names itself explicitly is a cycle, and reported.
    after: list[tuple[list[str], bool]] = field(default_factory=list)  # (notebooks, pattern is a glob)


@dataclass
class Merged:
    notebook: str
    target: str
    environment: str
    timeout: float | None
    cell_timeout: float | None
    retries: int
    kernel: str
    skip: str | None
    pythonpath: list[str]
    output_limit: int
    expected_duration: float | None
    pack: bool | None
    parameters: dict[str, Any]
    expect: dict[str, str]
    after: list[tuple[str, Source]]  # (notebook, where that dependency was written)
    kernel_required: bool

    def after_notebooks(self) -> list[str]:
        return list(dict.fromkeys(notebook for notebook, _ in self.after))

    def to_step(self, step_id: str, *, after: Sequence[str], cli_parameters: Mapping[str, Any]) -> StepSpec:
        return StepSpec(
            id=step_id,
            notebook=self.notebook,
            target=self.target,
            environment=self.environment,
            kernel=self.kernel,
            timeout_s=self.timeout,
            cell_timeout_s=self.cell_timeout,
            retries=self.retries,
            parameters={**self.parameters, **cli_parameters},  # `--param` wins over everything
            expect=dict(self.expect),
            after=tuple(after),
            skip=self.skip,
            pythonpath=tuple(self.pythonpath),
            output_limit_bytes=self.output_limit,
            kernel_required=self.kernel_required,
            expected_duration_s=self.expected_duration,
            pack=self.pack,
        )


def merge(notebook: str, defaults: Defaults, layers: list[Layer]) -> Merged:
    values: dict[str, Any] = {name: getattr(defaults, name, None) for name in _REPLACED}
    parameters = dict(defaults.parameters)
    expect: dict[str, str] = {}
    after: list[tuple[str, Source]] = []
    kernel_required = False
    for layer in layers:
        written = layer.settings.model_fields_set
        for name in _REPLACED:
            if name in written:
                values[name] = getattr(layer.settings, name)
        parameters.update(layer.settings.parameters or {})
        expect.update(layer.settings.expect or {})
        kernel_required = kernel_required or "kernel" in written
        for index, (notebooks, pattern_is_glob) in enumerate(layer.after):
            for other in notebooks:
                if not (other == notebook and (pattern_is_glob or layer.selects_by_glob)):
                    after.append((other, layer.source.at("after", index)))
    return Merged(
        notebook, **values, parameters=parameters, expect=expect, after=after, kernel_required=kernel_required
    )
