"""The resolved plan: what every backend consumes.

`orchestrator.plan.load_plan()` turns orchestrator.yml + notebook metadata into a `ResolvedPlan`; the local
and Azure ML backends, `rerun` and the report read only these objects (and `plan.json`, their JSON form).
Everything here is already validated and defaulted: no optional settings left to interpret.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steps.settings import DEFAULT_OUTPUT_LIMIT


@dataclass(frozen=True)
class TargetSpec:
    """Where a step runs. `gpus` > 0 makes it a GPU target."""

    name: str
    gpus: int = 0
    azureml_compute: str | None = None  # cluster name; None means serverless
    azureml_instance_type: str | None = None  # serverless instance type, e.g. Standard_NC6s_v3
    local_slots: int | None = None  # None: one per CPU core


@dataclass(frozen=True)
class EnvironmentSpec:
    """A step environment: a conda file and/or a base image, or a registered AML environment name."""

    name: str
    conda: str | None = None  # path relative to the plan root, forward slashes
    image: str | None = None
    azureml: str | None = None  # "name:version" or "azureml:name@latest" of a registered environment


@dataclass(frozen=True)
class PackSpec:
    """Azure ML packing: notebooks expected under `under_minutes` share nodes of at most `max_minutes` of work."""

    max_minutes: float = 20.0
    under_minutes: float = 20.0
    node_overhead_minutes: float = 3.0  # a node's start-up, for the saving `compile` prints


@dataclass(frozen=True)
class StepSpec:
    """One notebook, fully resolved."""

    id: str  # stable slug of the notebook path, valid as an Azure ML node name
    notebook: str  # path relative to the plan root, forward slashes
    target: str
    environment: str
    kernel: str  # the kernel to use when the notebook names none, or one not installed here (a warning)
    timeout_s: float | None  # whole-notebook wall clock limit
    cell_timeout_s: float | None
    retries: int  # transient failures only
    parameters: dict[str, Any] = field(default_factory=dict)
    expect: dict[str, str] = field(default_factory=dict)  # metric -> rule, e.g. {"accuracy": ">= 0.9"}
    after: tuple[str, ...] = ()  # step ids this step runs after
    skip: str | None = None  # reason, when the plan skips it
    pythonpath: tuple[str, ...] = ()  # folders relative to the plan root
    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT  # cap on stored output per cell (steps/settings.py)
    kernel_required: bool = False  # the plan names `kernel` for this notebook: use it, error if missing
    expected_duration_s: float | None = None  # the plan's estimate, used until the run history has measured it
    pack: bool | None = None  # Azure ML node sharing: None = by target (CPU yes, GPU no), False = never, True = yes


@dataclass(frozen=True)
class ResolvedPlan:
    root: Path  # the folder holding orchestrator.yml (or the folder given when there is none)
    plan_file: Path | None
    experiment: str
    steps: tuple[StepSpec, ...]  # in a valid execution order (every step after its `after` steps)
    targets: dict[str, TargetSpec]
    environments: dict[str, EnvironmentSpec]
    secret_env: tuple[str, ...] = ()  # extra environment variable names never passed to a kernel
    pass_env: tuple[str, ...] = ()  # names the kernel secret policy lets through (docs/isolation.md)
    isolation: str = "auto"  # "required": no kernel runs without its own PID namespace
    warm_kernels: bool = True  # local runs fork each kernel from a warm parent (steps/_warm.py)
    warnings: tuple[str, ...] = ()
    pack: PackSpec = field(default_factory=PackSpec)

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def to_json(self) -> dict[str, Any]:
        """The form written to plan.json in a run folder (and read back by `rerun`)."""
        data = asdict(self)
        data["root"] = str(self.root)
        data["plan_file"] = str(self.plan_file) if self.plan_file else None
        data["schema"] = 1
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ResolvedPlan":
        steps = tuple(
            StepSpec(**{**s, "after": tuple(s["after"]), "pythonpath": tuple(s["pythonpath"])})
            for s in data["steps"]
        )
        return cls(
            root=Path(data["root"]),
            plan_file=Path(data["plan_file"]) if data.get("plan_file") else None,
            experiment=data["experiment"],
            steps=steps,
            targets={k: TargetSpec(**v) for k, v in data["targets"].items()},
            environments={k: EnvironmentSpec(**v) for k, v in data["environments"].items()},
            secret_env=tuple(data.get("secret_env", ())),
            pass_env=tuple(data.get("pass_env", ())),
            isolation=str(data.get("isolation", "auto")),
            warm_kernels=bool(data.get("warm_kernels", True)),
            warnings=tuple(data.get("warnings", ())),
            pack=PackSpec(**data["pack"]) if isinstance(data.get("pack"), dict) else PackSpec(),
        )
