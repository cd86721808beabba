"""ResolvedPlan -> Azure ML v2 PipelineJob, built offline (docs/azureml-sdk.md#pipeline-shape: the recommended shape).

- one command node per notebook, named by its step id, labelled by its notebook path, running
  steps/azureml_step.py (which runs steps/run_notebook.py, the same step contract as locally);
- compute from the step's target: a cluster name, or serverless with an instance type (docs/azureml-sdk.md#compute);
- one environment object per distinct definition, one code snapshot for every notebook node;
- `after` as data edges: a node takes each dependency's `result` folder as an input (docs/azureml-sdk.md#inputs-and-outputs), which the
  runner reads with --after-result;
- a `run_key` pipeline input bound into every notebook node: same key, completed nodes are reused; new
  key, all run (docs/azureml-sdk.md#reuse);
- node `limits.timeout` from the whole-notebook timeout plus a grace period: the runner enforces the real
  limit and records `timed_out`; Azure ML's limit only stops a runner that hangs (docs/azureml-sdk.md#timeouts);
- an isolated report node set as `settings.on_finalize`, so it runs whether notebooks pass, fail or the
  run is cancelled; it takes only `run_key` and literals, and finds its siblings through MLflow at run time
  (docs/azureml-sdk.md#on_finalize, case C; docs/azureml-sdk.md#learning-each-steps-outcome);
- `continue_on_step_failure` on, so one failing notebook does not cancel the others (docs/azureml-sdk.md#continue_on_step_failure).

Steps the plan skips, and steps after them, get no node: they cannot run, and a node costs a compute start.
The report lists them as skipped, with the reason.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import orchestrator
from orchestrator.azureml import collect
from orchestrator.azureml.components import (
    AFTER_INPUT,
    PACK_OUTPUT,
    REPORT_OUTPUT,
    RESULT_OUTPUT,
    RUN_KEY,
    notebook_component,
    pack_component,
    report_component,
)
from orchestrator.azureml.devops_hook import IDENTITY, check_config
from orchestrator.azureml.environments import EnvironmentDefinition, EnvironmentSet
from orchestrator.azureml.names import experiment_name, json_arg, redact_url, shell_arg
from orchestrator.azureml.packing import Node, Packing, pack_steps
from orchestrator.azureml.sdk import require
from orchestrator.azureml.snapshot import default_cache, notebook_snapshot, report_snapshot, repository_root
from orchestrator.errors import InvalidInputError, Problem
from orchestrator.history.vcs import current_branch
from orchestrator.plan.spec import ResolvedPlan, StepSpec, TargetSpec
from steps.settings import COMPONENT_SETTINGS

log = logging.getLogger("orchestrator.azureml")

REPORT_NODE = "orchestrator_report"
SERVERLESS = "serverless"
# Serverless GPU steps need an instance type; this one is the smallest common NVIDIA T4 VM size
# (the example in docs/azureml-sdk.md#compute). Set targets.<name>.azureml.instance_type to choose another.
DEFAULT_GPU_INSTANCE = "Standard_NC4as_T4_v3"
# Added to a node's Azure ML time limit on top of the notebook's own: environment activation, kernel start
# and uploading the outputs and MLflow artifacts happen inside the node's time too.
TIMEOUT_GRACE_S = 900
DEFAULT_RUN_KEY = "manual"
# The report node's limits.timeout: its MLflow search waits at most ORCHESTRATOR_DISCOVERY_SETTLE_S (30 s),
# then downloads each notebook's artifacts and renders the report; an hour is far beyond that.
REPORT_TIMEOUT_S = 3600
REPORT_IDENTITIES = (None, "managed", "user")
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_EXPRESSION = re.compile(r"\$\{\{[A-Za-z_][A-Za-z0-9_.]*\}\}")


@dataclass(frozen=True)
class CompileOptions:
    """How to compile, besides the plan. Everything here is optional."""

    run_key: str = DEFAULT_RUN_KEY  # the pipeline input's value; a schedule passes an expression
    cache_dir: Path | None = None  # staged snapshots; default <repository>/.orchestrator/azureml/snapshots
    repository: str | None = None  # job tag; default: the repository's `origin` remote (credentials removed)
    commit: str | None = None  # job tag; default: the repository's HEAD
    display_name: str | None = None
    devops: Mapping[str, Any] | None = None  # the report node's DevOps settings: names only, never secrets
    report_identity: str | None = None  # None (the job's token), "managed" or "user": for Key Vault access
    tags: Mapping[str, str] = field(default_factory=dict)  # extra pipeline job tags
    # step id -> expected seconds (run history, else the plan): notebooks known to be short are packed per node
    expected_durations: Mapping[str, float] | None = None


# ------------------------------------------------------------------------------------------------- helpers


def _plan_file(plan: ResolvedPlan) -> str:
    return str(plan.plan_file or plan.root)


def static_skips(plan: ResolvedPlan) -> dict[str, str]:
    """Step id -> reason, for steps that cannot run: skipped by the plan, or after one that is."""
    skips: dict[str, str] = {}
    notebooks = {step.id: step.notebook for step in plan.steps}
    for step in plan.steps:  # in execution order: every step after the steps it depends on
        if step.skip is not None:
            skips[step.id] = step.skip
            continue
        blocked = [dep for dep in step.after if dep in skips]
        if blocked:
            skips[step.id] = f"after {notebooks.get(blocked[0], blocked[0])}, which is skipped"
    return skips


def pipeline_run_key(value: str) -> str:
    """The run_key input's value: an Azure ML expression as it is (a schedule's trigger time), anything else
    made safe for the nodes' command lines."""
    return value if _EXPRESSION.fullmatch(value) else shell_arg(value)


def node_timeout(step: StepSpec) -> int | None:
    """The node's `limits.timeout`: every attempt's notebook limit plus the grace period."""
    if step.timeout_s is None:
        return None
    return math.ceil(step.timeout_s * (step.retries + 1)) + TIMEOUT_GRACE_S


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return value if out.returncode == 0 and value else None


def _check(plan: ResolvedPlan, runnable: list[StepSpec], report_name: str) -> None:
    problems = []
    known = {step.id for step in runnable}
    for step in runnable:
        missing = [dep for dep in step.after if dep not in known]
        if missing:
            problems.append(Problem(_plan_file(plan), step.notebook, f"runs after {missing[0]!r}, which is not in the plan"))
        if not _NODE_NAME.match(step.id):
            problems.append(Problem(_plan_file(plan), step.notebook, f"step id {step.id!r} is not a valid Azure ML node name"))
        if step.id == report_name:
            problems.append(Problem(_plan_file(plan), step.notebook, f"step id {step.id!r} is reserved for the report node"))
        if step.target not in plan.targets:
            targets = ", ".join(sorted(plan.targets)) or "none"
            problems.append(Problem(_plan_file(plan), step.notebook, f"unknown target {step.target!r} (known: {targets})"))
        else:
            target = plan.targets[step.target]
            if target.azureml_compute is None and target.azureml_instance_type is None and target.gpus > 1:
                problems.append(Problem(
                    _plan_file(plan), f"targets.{target.name}.azureml",
                    f"a serverless target with {target.gpus} GPUs needs an instance_type (or a compute cluster)",
                ))  # fmt: skip
    if problems:
        raise InvalidInputError(problems)


def apply_compute(node: Any, target: TargetSpec) -> None:
    """A cluster by name, or serverless with an instance type (docs/azureml-sdk.md#compute)."""
    from azure.ai.ml.entities import JobResourceConfiguration

    if target.azureml_compute:
        node.compute = target.azureml_compute
        return
    node.compute = SERVERLESS
    instance_type = target.azureml_instance_type or (DEFAULT_GPU_INSTANCE if target.gpus else None)
    if instance_type:
        node.resources = JobResourceConfiguration(instance_type=instance_type, instance_count=1)
    # A CPU target with neither: serverless picks its default CPU instance type.


def _report_target(plan: ResolvedPlan, runnable: list[StepSpec]) -> TargetSpec:
    """The report node runs where most CPU notebooks run (no extra cluster), else on a CPU target of the
    plan, else serverless. Its environment is always the stock one (EnvironmentSet.stock)."""
    cpu = [s for s in runnable if plan.targets[s.target].gpus == 0]
    if cpu:
        return plan.targets[Counter(s.target for s in cpu).most_common(1)[0][0]]
    return next((t for t in plan.targets.values() if t.gpus == 0), TargetSpec(name="report"))


# ------------------------------------------------------------------------------------------------- compile


def compile_plan(plan: ResolvedPlan, options: CompileOptions | None = None) -> Any:
    """Build the pipeline job for `plan`, offline. Returns an `azure.ai.ml.entities.PipelineJob`.

    Stages the code snapshots on disk (content-addressed, see `snapshot`), so the returned job can be
    validated, exported or submitted as it is.
    """
    return compile_pipeline(plan, options).job


@dataclass(frozen=True)
class Compiled:
    job: Any  # azure.ai.ml.entities.PipelineJob
    packing: Packing  # which notebooks share a node, and what that saves


def compile_pipeline(plan: ResolvedPlan, options: CompileOptions | None = None) -> Compiled:
    """compile_plan, with the packing it chose (what `orchestrator compile` prints)."""
    require()
    from azure.ai.ml import Output
    from azure.ai.ml.entities import PipelineJob, PipelineJobSettings

    options = options or CompileOptions()
    skips = static_skips(plan)
    runnable = [step for step in plan.steps if step.id not in skips]
    _check(plan, runnable, REPORT_NODE)
    if options.report_identity not in REPORT_IDENTITIES:
        raise InvalidInputError([Problem("report_identity", str(options.report_identity), "expected managed or user")])

    repo_root = repository_root(plan.root)
    plan_root = Path(os.path.relpath(plan.root.resolve(), repo_root)).as_posix()
    cache = options.cache_dir or default_cache(repo_root)
    envs = EnvironmentSet(plan)

    # Short notebooks of one target and environment share a node (packing.py); the rest get one each. One
    # component per distinct environment (and one pack component per environment that has packs), with as
    # many optional `after_i` inputs as its most connected node needs.
    definition_of = {s.id: envs.definition(s.environment, gpu=plan.targets[s.target].gpus > 0) for s in runnable}
    packing = pack_steps(runnable, plan.targets, options.expected_durations or {}, plan.pack, group_of=definition_of)
    jobs: dict[str, Any] = {}
    if runnable:
        code = notebook_snapshot(repo_root, cache).path
        factories = _Factories(code, envs, plan_root, plan.secret_env, packing, definition_of,
                               pass_env=plan.pass_env, require_isolation=plan.isolation == "required")
        outputs: dict[str, Any] = {}  # step id -> the node output holding its result folder
        for node in _in_running_order(packing):  # dependencies are built before their dependants
            first = node.steps[0]
            target = plan.targets[first.target]
            if node.is_pack:
                built = _pack_node(node, factories.pack(definition_of[first.id]), outputs, target)
                outputs.update({step.id: built.outputs[PACK_OUTPUT.format(i)] for i, step in enumerate(node.steps)})
            else:
                built = _notebook_node(first, factories.single(definition_of[first.id]), outputs, target)
                outputs[first.id] = built.outputs[RESULT_OUTPUT]
            jobs[node.name] = built

    jobs[REPORT_NODE] = _report_node(plan, runnable, envs, skips, cache, options)
    settings = PipelineJobSettings(continue_on_step_failure=True, force_rerun=False)
    if runnable:
        # on_finalize needs at least one other node (pipeline_job.py: _validate_init_finalize_job); with
        # nothing to run, the report is the only node and runs anyway.
        settings.on_finalize = REPORT_NODE
    tags = _job_tags(plan, repo_root, options)
    commit = tags.get("commit")
    job = PipelineJob(
        jobs=jobs,
        inputs={RUN_KEY: pipeline_run_key(options.run_key)},
        outputs={REPORT_OUTPUT: Output(type="uri_folder", mode="rw_mount")},
        settings=settings,
        experiment_name=experiment_name(plan.experiment),
        display_name=options.display_name or (f"{plan.experiment} @ {commit[:8]}" if commit else plan.experiment),
        description=f"{len(runnable)} of {len(plan.steps)} notebooks from {tags['repository']}, run by orchestrator",
        tags=tags,
    )
    log.info(
        "compiled plan=%s nodes=%d notebooks=%d skipped=%d environments=%d", _plan_file(plan), packing.after,
        len(runnable), len(skips), len(envs.objects),
    )  # fmt: skip
    return Compiled(job, packing)


def _report_node(plan: ResolvedPlan, runnable: list[StepSpec], envs: EnvironmentSet, skips: Mapping[str, str],
                 cache: Path, options: CompileOptions) -> Any:
    """The isolated report node: only the run_key binding and literals as inputs (docs/azureml-sdk.md#on_finalize, case C)."""
    from azure.ai.ml.entities import ManagedIdentityConfiguration, UserIdentityConfiguration

    report_target = _report_target(plan, runnable)
    report = report_component(code=report_snapshot(cache).path, environment=envs.get(envs.stock()))
    inputs: dict[str, Any] = {
        RUN_KEY: f"${{{{parent.inputs.{RUN_KEY}}}}}",
        "expected": collect.encode_expected(collect.expected_entries(plan, skips)),
        "title": shell_arg(plan.experiment),
    }
    if options.devops:
        config = check_config(options.devops)  # names only; a secret is refused
        if options.report_identity:
            config[IDENTITY] = options.report_identity  # which credential reads Key Vault (devops_hook)
        inputs["devops"] = json_arg(config)
    node = report(**inputs)
    node.name = REPORT_NODE
    node.display_name = "report"
    node.tags = {"step": REPORT_NODE}
    apply_compute(node, report_target)
    if options.report_identity == "managed":
        node.identity = ManagedIdentityConfiguration()
    elif options.report_identity == "user":
        if not report_target.azureml_compute:
            raise InvalidInputError([Problem(
                "report_identity", "user", "the user's identity reaches a job on behalf of the user on compute "
                "clusters only; the report node would run serverless: give its target "
                f"({report_target.name}) an azureml.compute cluster, or use report_identity='managed'")])
        node.identity = UserIdentityConfiguration()
    node.outputs[REPORT_OUTPUT] = f"${{{{parent.outputs.{REPORT_OUTPUT}}}}}"
    node.set_limits(timeout=REPORT_TIMEOUT_S)  # a report node that hangs must not hold the pipeline open
    return node


def _job_tags(plan: ResolvedPlan, repo_root: Path, options: CompileOptions) -> dict[str, str]:
    remote = options.repository or _git(repo_root, "config", "--get", "remote.origin.url") or repo_root.name
    commit = options.commit or _git(repo_root, "rev-parse", "HEAD")
    tags = {
        "repository": redact_url(remote),
        "plan": Path(os.path.relpath((plan.plan_file or plan.root).resolve(), repo_root)).as_posix(),
        "notebooks": str(len(plan.steps)),
        "orchestrator": orchestrator.__version__,
    }
    if commit:
        tags["commit"] = commit
    branch = current_branch(repo_root)
    if branch:
        tags["branch"] = branch  # the run history's trends and baselines go by branch (docs/history.md)
    tags.update(options.tags)
    return tags


def _node_factory(component: Any) -> Any:
    """The function that makes a node of `component`, made once.

    Calling a component (`component(**inputs)`, the public way) rebuilds this function on every call, YAML
    dump of the component included (azure/ai/ml/entities/_component/component.py: `__call__` -> `_func`):
    about 10 ms a node, most of the compile time of a 300-notebook plan. `_func` is what `__call__` returns
    after checking for positional arguments, which are never passed here.
    """
    factory = getattr(component, "_func", None)
    return factory if callable(factory) else component


def _notebook_node(step: StepSpec, component: Any, outputs: Mapping[str, Any], target: TargetSpec) -> Any:
    inputs: dict[str, Any] = {
        RUN_KEY: f"${{{{parent.inputs.{RUN_KEY}}}}}",
        "step": step.id,
        "notebook": shell_arg(step.notebook),
        "parameters": json_arg(step.parameters),
        "expect": json_arg(step.expect),
        "kernel": shell_arg(step.kernel),
        "kernel_required": "true" if step.kernel_required else "false",
        "retries": step.retries,
        "target": shell_arg(step.target),
        "environment": shell_arg(step.environment),
        "pythonpath": json_arg(list(step.pythonpath)),
    }
    for setting in COMPONENT_SETTINGS:  # steps/settings.py: the settings that cross to the node
        value = getattr(step, setting.field)
        if value is not None:
            inputs[str(setting.component_input)] = value
    for index, dep in enumerate(step.after):
        inputs[AFTER_INPUT.format(index)] = outputs[dep]
    node = component(**inputs)
    node.name = step.id
    node.display_name = step.notebook
    node.tags = {"notebook": step.notebook, "step": step.id}
    apply_compute(node, target)
    limit = node_timeout(step)
    if limit is not None:
        node.set_limits(timeout=limit)
    return node


class _Factories:
    """Node factories, one component per environment definition and kind (single notebook, pack), sized for
    the nodes that use it: `after_i` inputs for the most connected node, outputs for the largest pack."""

    def __init__(self, code: Path, envs: EnvironmentSet, plan_root: str, secret_env: tuple[str, ...],
                 packing: Packing, definition_of: Mapping[str, EnvironmentDefinition], *,
                 pass_env: tuple[str, ...] = (), require_isolation: bool = False) -> None:
        self._singles: dict[EnvironmentDefinition, Any] = {}
        self._packs: dict[EnvironmentDefinition, Any] = {}
        singles: dict[EnvironmentDefinition, int] = {}
        packs: dict[EnvironmentDefinition, tuple[int, int]] = {}
        for node in packing.nodes:
            definition = definition_of[node.steps[0].id]
            if node.is_pack:
                slots, size = packs.get(definition, (0, 0))
                packs[definition] = (max(slots, len(_outside_deps(node))), max(size, len(node.steps)))
            else:
                singles[definition] = max(singles.get(definition, 0), len(node.steps[0].after))
        for definition, slots in singles.items():
            self._singles[definition] = _node_factory(notebook_component(
                code=code, environment=envs.get(definition), plan_root=plan_root, secret_env=secret_env,
                after_slots=slots, label=definition.label, pass_env=pass_env, require_isolation=require_isolation))
        for definition, (slots, size) in packs.items():
            self._packs[definition] = _node_factory(pack_component(
                code=code, environment=envs.get(definition), plan_root=plan_root, secret_env=secret_env,
                after_slots=slots, size=size, label=definition.label, pass_env=pass_env,
                require_isolation=require_isolation))

    def single(self, definition: EnvironmentDefinition) -> Any:
        return self._singles[definition]

    def pack(self, definition: EnvironmentDefinition) -> Any:
        return self._packs[definition]


def _outside_deps(node: Node) -> list[str]:
    """Step ids the pack's notebooks run after that are in other nodes, in first-use order."""
    inside = {step.id for step in node.steps}
    return list(dict.fromkeys(dep for step in node.steps for dep in step.after if dep not in inside))


def _in_running_order(packing: Packing) -> list[Node]:
    """The nodes, each after every node it takes an output from (packing keeps the node graph acyclic)."""
    done: set[int] = set()
    ordered: list[Node] = []
    pending = list(range(len(packing.nodes)))
    while pending:
        ready = [i for i in pending if packing.nodes[i].after_nodes <= done]
        if not ready:
            raise AssertionError("packing made a cycle of nodes")
        for index in ready:
            done.add(index)
            ordered.append(packing.nodes[index])
        pending = [i for i in pending if i not in done]
    return ordered


PACK_LABEL_LIMIT = 240  # studio's node label: the notebooks, shortened past this


def pack_label(notebooks: list[str]) -> str:
    """'a.ipynb + b.ipynb + c.ipynb', or '... (+N more)' when long: studio shows one node per pack."""
    label = ""
    for index, notebook in enumerate(notebooks):
        more = f" (+{len(notebooks) - index} more)"
        candidate = notebook if not label else f"{label} + {notebook}"
        if len(candidate) + len(more) > PACK_LABEL_LIMIT and index < len(notebooks) - 1:
            return label + more
        label = candidate
    return label


def _pack_node(node: Node, component: Any, outputs: Mapping[str, Any], target: TargetSpec) -> Any:
    position = {step.id: i for i, step in enumerate(node.steps)}
    outside = _outside_deps(node)
    # Raw values: the whole list is made shell-safe once (json_arg), and steps/azureml_pack.py reads it back.
    entries = [
        {
            "step": step.id, "notebook": step.notebook, "parameters": step.parameters, "expect": step.expect,
            "kernel": step.kernel, "kernel_required": step.kernel_required, "timeout": step.timeout_s,
            "cell_timeout": step.cell_timeout_s, "retries": step.retries, "target": step.target,
            "environment": step.environment, "pythonpath": list(step.pythonpath),
            "output_limit": step.output_limit_bytes,
            "after_inputs": [outside.index(dep) for dep in step.after if dep not in position],
            "after_inside": [position[dep] for dep in step.after if dep in position],
        }
        for step in node.steps
    ]  # fmt: skip
    inputs: dict[str, Any] = {RUN_KEY: f"${{{{parent.inputs.{RUN_KEY}}}}}", "pack": json_arg(entries)}
    for index, dep in enumerate(outside):
        inputs[AFTER_INPUT.format(index)] = outputs[dep]
    built = component(**inputs)
    built.name = node.name
    built.display_name = pack_label([step.notebook for step in node.steps])
    built.tags = {"step": node.name, "pack": ",".join(step.id for step in node.steps)}
    apply_compute(built, target)
    limits = [node_timeout(step) for step in node.steps]
    if all(limit is not None for limit in limits):
        # Each notebook's own limit (every attempt) in turn, and one grace period for the node.
        built.set_limits(timeout=sum(limit - TIMEOUT_GRACE_S for limit in limits if limit is not None) + TIMEOUT_GRACE_S)
    return built

