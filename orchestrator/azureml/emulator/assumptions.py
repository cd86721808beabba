"""Pessimistic assumptions about the service, each switchable (`--assume NAME`, or `Assumptions(...)` in tests).

By default the emulated workspace behaves as the SDK source and the Learn pages describe (docs/azureml.md,
"The emulated workspace"). Each switch replaces one behaviour that no public document guarantees with its
worst plausible form, so that the report can be shown to stay complete and true either way:

- `finalize-never`: the `settings.on_finalize` node never runs (a private-preview setting; that it fires after
  a failed or cancelled pipeline rests on one SDK docstring);
- `no-parent-tag`: the finalize node's MLflow run has no `mlflow.parentRunId` tag;
- `reused-hidden`: a reused node gets no MLflow run of its own in the new pipeline (Learn only says the service
  "displays original component's output/logs/metrics");
- `search-lag`: a tag becomes visible to `search_runs` only `search_lag_s` seconds after it was set;
- `defaults-hidden`: a job invoked from a batch endpoint lists only the inputs the invocation gave, not the
  defaults of its pipeline component (no source says which the service shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from orchestrator.errors import InvalidInputError, Problem

FINALIZE_NEVER = "finalize-never"
NO_PARENT_TAG = "no-parent-tag"
REUSED_HIDDEN = "reused-hidden"
SEARCH_LAG = "search-lag"
DEFAULTS_HIDDEN = "defaults-hidden"
NAMES = (FINALIZE_NEVER, NO_PARENT_TAG, REUSED_HIDDEN, SEARCH_LAG, DEFAULTS_HIDDEN)
DEFAULT_SEARCH_LAG_S = 5.0


@dataclass(frozen=True)
class Assumptions:
    finalize_never: bool = False
    no_parent_tag: bool = False
    reused_hidden: bool = False
    search_lag_s: float = 0.0  # 0: tags are searchable as soon as they are set
    defaults_hidden: bool = False

    @classmethod
    def parse(cls, names: Iterable[str], *, search_lag_s: float = DEFAULT_SEARCH_LAG_S) -> Assumptions:
        """From `--assume` values; `all` switches every one on. Unknown names are refused (exit 2)."""
        chosen: set[str] = set()
        for name in names:
            key = name.strip().lower()
            if key == "all":
                chosen.update(NAMES)
            elif key in NAMES:
                chosen.add(key)
            else:
                raise InvalidInputError([Problem("--assume", name, f"unknown assumption; expected one of: {', '.join(NAMES)}, all")])
        return cls(finalize_never=FINALIZE_NEVER in chosen, no_parent_tag=NO_PARENT_TAG in chosen,
                   reused_hidden=REUSED_HIDDEN in chosen, search_lag_s=search_lag_s if SEARCH_LAG in chosen else 0.0,
                   defaults_hidden=DEFAULTS_HIDDEN in chosen)

    @property
    def names(self) -> tuple[str, ...]:
        flags = (self.finalize_never, self.no_parent_tag, self.reused_hidden, self.search_lag_s > 0, self.defaults_hidden)
        return tuple(name for name, on in zip(NAMES, flags) if on)
