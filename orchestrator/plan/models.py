"""Pydantic models of orchestrator.yml (docs/architecture.md#plan-file): what may be written, with types, defaults and help.

These validate the *shape* of the file; references between its parts (target names, `after`, files on
disk) are resolved by `orchestrator.plan.loader`. Field descriptions become the JSON Schema's help text
(`orchestrator schema`), so they are written for someone editing the YAML.

Settings in a notebook entry or in notebook metadata are all optional: which keys were *written* is what
matters when layers are merged (`model_fields_set`), so "not set" and "set to the default" stay different.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from orchestrator.plan.fields import (
    AmlEnvironment,
    Duration,
    EnvName,
    Parameters,
    PassedEnvName,
    RelativeFile,
    RelativePath,
    Rule,
    Size,
    Skip,
    Slots,
    not_null,
    reject_null,
)
from orchestrator.plan.limits import MAX_RETRIES
from orchestrator.plan.messages import show
from orchestrator.plan.spec import EnvironmentSpec, PackSpec, TargetSpec
from steps.settings import DEFAULT_OUTPUT_LIMIT


class _Model(BaseModel):
    # strict: YAML already types values, so "3" for a number is a mistake to report, not to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)


# ------------------------------------------------------------------------------------------ notebook settings


class NotebookSettings(_Model):
    """Settings of one notebook: in a `notebooks` entry, or in the notebook's metadata under `orchestrator`."""

    target: str | None = Field(
        default=None,
        description="Where the notebook runs: a key of `targets` (built in: cpu, gpu).",
        json_schema_extra=not_null,
    )
    environment: str | None = Field(
        default=None,
        description="The step environment: a key of `environments` (built in: default).",
        json_schema_extra=not_null,
    )
    timeout: Duration | None = Field(
        default=None, description="Whole-notebook wall clock limit, e.g. 30m; null for no limit."
    )
    cell_timeout: Duration | None = Field(default=None, description="Per-cell time limit, e.g. 10m; null for no limit.")
    retries: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETRIES,
        description="Retries after transient failures only (kernel start, infrastructure).",
        json_schema_extra=not_null,
    )
    kernel: str | None = Field(
        default=None,
        description="Kernel to run the notebook with. Named here, it is required: a missing kernel is an error.",
        json_schema_extra=not_null,
    )
    parameters: Parameters | None = Field(
        default=None, description="papermill parameters, merged key by key over earlier ones."
    )
    expect: dict[str, Rule] | None = Field(
        default=None,
        description="Metric -> rule, e.g. {accuracy: '>= 0.9'}, checked against the metrics the notebook glues; "
        "a miss fails the step. Merged key by key over earlier ones.",
    )
    after: list[str] | None = Field(
        default=None,
        description="Notebooks (paths or globs relative to the plan) this one runs after. Accumulates across entries.",
    )
    skip: Skip = Field(default=None, description="Skip the notebook: a reason, or true. false un-skips it.")
    pythonpath: list[RelativePath] | None = Field(
        default=None,
        description="Folders (relative to the plan) put on the kernel's PYTHONPATH.",
        json_schema_extra=not_null,
    )
    output_limit: Size | None = Field(
        default=None, description="Cap on stored output per cell, e.g. 2MB.", json_schema_extra=not_null
    )
    expected_duration: Duration | None = Field(
        default=None,
        description="How long the notebook usually runs, e.g. 20m, until the run history has measured it: long "
        "notebooks start first locally, and short ones may share an Azure ML node.",
        json_schema_extra=not_null,
    )
    pack: bool | None = Field(
        default=None,
        description="Azure ML: may share a node with other short notebooks (default: yes for CPU targets, no for "
        "GPU targets); false gives it a node of its own.",
        json_schema_extra=not_null,
    )

    # null only means something for timeouts ("no limit") and skip ("not skipped").
    _no_null = field_validator(
        "target", "environment", "retries", "kernel", "pythonpath", "output_limit", "expected_duration", "pack",
        mode="before",
    )(reject_null)

    @field_validator("target", "environment", "kernel")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a name, got an empty string")
        return value.strip()


class NotebookEntry(NotebookSettings):
    """One entry of `notebooks`: exactly one of `path` or `glob`, plus settings for the notebooks it names."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["path"]}, {"required": ["glob"]}]},
    )

    path: RelativePath | None = Field(
        default=None, description="One notebook, relative to the plan. It must exist.", json_schema_extra=not_null
    )
    glob: RelativePath | None = Field(
        default=None,
        description="Notebooks matching a pattern relative to the plan; ** spans folders; a folder pattern "
        "covers the notebooks below it. Matching nothing is a warning.",
        json_schema_extra=not_null,
    )

    _no_null_selector = field_validator("path", "glob", mode="before")(reject_null)

    @model_validator(mode="after")
    def _one_selector(self) -> NotebookEntry:
        if (self.path is None) == (self.glob is None):
            given = "both path and glob" if self.path is not None else "neither"
            raise ValueError(f"expected exactly one of path or glob, got {given}")
        return self


# --------------------------------------------------------------------------------------------------- defaults


class Defaults(_Model):
    """Settings for every notebook unless its metadata or a `notebooks` entry says otherwise."""

    target: str = Field(default="cpu", min_length=1, description="Default target: a key of `targets`.")
    environment: str = Field(
        default="default", min_length=1, description="Default environment: a key of `environments`."
    )
    timeout: Duration | None = Field(default=1800.0, description="Whole-notebook wall clock limit; null for no limit.")
    cell_timeout: Duration | None = Field(default=None, description="Per-cell time limit; null (the default) for none.")
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES, description="Retries after transient failures only.")
    kernel: str = Field(
        default="python3",
        min_length=1,
        description="Kernel used when a notebook names none, or one not installed here (a warning).",
    )
    parameters: Parameters = Field(default_factory=dict, description="papermill parameters for every notebook.")
    pythonpath: list[RelativePath] = Field(
        default_factory=lambda: ["."],
        description="Folders (relative to the plan) put on the kernel's PYTHONPATH, so notebooks import the "
        "repository's own package without installing it.",
    )
    output_limit: Size = Field(default=DEFAULT_OUTPUT_LIMIT, description="Cap on stored output per cell, e.g. 2MB.")


# ------------------------------------------------------------------------------------ targets and environments


class AzureMLTarget(_Model):
    """Azure ML compute: exactly one of a cluster name or a serverless instance type."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["compute"]}, {"required": ["instance_type"]}]})

    compute: str | None = Field(default=None, min_length=1, description="Compute cluster name in the workspace.")
    instance_type: str | None = Field(
        default=None, min_length=1, description="Serverless compute instance type, e.g. Standard_NC6s_v3."
    )

    @model_validator(mode="after")
    def _one_compute(self) -> AzureMLTarget:
        if (self.compute is None) == (self.instance_type is None):
            given = "both" if self.compute is not None else "neither"
            raise ValueError(f"expected exactly one of compute or instance_type, got {given}")
        return self


class LocalTarget(_Model):
    """How the local backend runs steps of this target."""

    slots: Slots = Field(default=None, description="Concurrent steps: auto (one per CPU core) or a number.")


class Target(_Model):
    """Where steps run: Azure ML compute and local concurrency."""

    azureml: AzureMLTarget | None = Field(default=None, description="Azure ML compute.")
    local: LocalTarget | None = Field(default=None, description="Local backend settings.")
    gpus: int = Field(default=0, ge=0, description="GPUs a step needs; more than 0 makes this a GPU target.")

    def spec(self, name: str) -> TargetSpec:
        return TargetSpec(
            name=name,
            gpus=self.gpus,
            azureml_compute=self.azureml.compute if self.azureml else None,
            azureml_instance_type=self.azureml.instance_type if self.azureml else None,
            local_slots=self.local.slots if self.local else None,
        )


class Environment(_Model):
    """A step environment: a conda file and/or a base image, or a registered Azure ML environment."""

    conda: RelativeFile | None = Field(
        default=None, description="Conda file relative to the plan (it may be outside the plan folder); it must exist.")
    image: str | None = Field(default=None, min_length=1, description="Docker base image.")
    azureml: AmlEnvironment | None = Field(default=None, description="A registered Azure ML environment, name:version.")

    def spec(self, name: str) -> EnvironmentSpec:
        return EnvironmentSpec(name=name, conda=self.conda, image=self.image, azureml=self.azureml)


class Packing(_Model):
    """Azure ML: short notebooks sharing a target and an environment run together on one node, so each pays
    the node start-up (queue, VM, image, snapshot, mounts) once per pack instead of once per notebook."""

    max_minutes: float = Field(default=20.0, gt=0, description="Expected work per packed node, at most (minutes).")
    under_minutes: float | None = Field(
        default=None, gt=0, description="Only notebooks expected to run under this long are packed (minutes; "
        "default: max_minutes).", json_schema_extra=not_null,
    )
    node_overhead_minutes: float = Field(
        default=3.0, ge=0, description="What starting one node costs (minutes), for the saving `compile` prints."
    )

    _no_null = field_validator("under_minutes", mode="before")(reject_null)

    def spec(self) -> PackSpec:
        return PackSpec(max_minutes=self.max_minutes, under_minutes=self.under_minutes or self.max_minutes,
                        node_overhead_minutes=self.node_overhead_minutes)


# ------------------------------------------------------------------------------------------------- the file


class PlanFile(_Model):
    """orchestrator.yml: which notebooks run, where, and how (docs/architecture.md#plan-file)."""

    model_config = ConfigDict(title="orchestrator.yml")

    version: Literal[1] = Field(default=1, description="Plan format version; 1.")
    experiment: str | None = Field(
        default=None,
        min_length=1,
        description="Azure ML experiment and report title (default: the plan folder's name).",
        json_schema_extra=not_null,
    )
    defaults: Defaults = Field(default_factory=lambda: Defaults(), description="Settings for every notebook.")
    targets: dict[str, Target] = Field(
        default_factory=dict, description="Named targets; cpu (0 GPUs) and gpu (1 GPU) exist unless declared."
    )
    environments: dict[str, Environment] = Field(
        default_factory=dict, description="Named step environments; default exists unless declared."
    )
    notebooks: list[NotebookEntry] | None = Field(
        default=None,
        description="Ordered entries; later entries override earlier ones for the same notebook. "
        "Without this key, every notebook under the plan folder runs.",
        json_schema_extra=not_null,
    )
    secret_env: list[EnvName] = Field(
        default_factory=list,
        description="Environment variables never passed to a notebook kernel (added to the built-in list).",
    )
    pack: Packing = Field(default_factory=lambda: Packing(), description="Azure ML: packing short notebooks per node.")
    pass_env: list[PassedEnvName] = Field(
        default_factory=list,
        description="Environment variables passed to notebook kernels although their name or value looks "
        "secret (docs/isolation.md); never the orchestrator's own credentials, never a secret_env name.",
    )
    isolation: Literal["auto", "required"] = Field(
        default="auto",
        description="auto: each kernel in its own PID namespace where the machine allows it, else unisolated "
        "with a warning; required: refuse to run a notebook unisolated (docs/isolation.md).",
    )
    warm_kernels: bool = Field(
        default=True,
        description="Local runs: fork each ipykernel from a warm parent that has imported ipykernel once, in its "
        "own namespace as always (docs/step-runner.md, \"Warm kernel start\"); false: every kernel is a new "
        "interpreter.",
    )

    _no_null = field_validator("experiment", "notebooks", mode="before")(reject_null)

    @field_validator("pass_env")
    @classmethod
    def _not_withheld(cls, value: list[str], info: ValidationInfo) -> list[str]:
        both = sorted(set(value) & set(info.data.get("secret_env") or ()))
        if both:
            raise ValueError(f"{', '.join(both)} also in secret_env: a name cannot be both withheld and passed")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        # Literal[1] alone would take `true` and `1.0`, since both compare equal to 1 in Python.
        if type(value) is not int or value != 1:
            raise ValueError(f"expected 1, got {show(value)}")
        return value
