"""The two command components of a compiled pipeline: the contract between it and steps/*.py.

One notebook component per distinct environment, reused by every notebook node of that environment
(docs/azureml-sdk.md#nodes, option B): Azure ML registers it once per submission instead of once per notebook,
which matters for plans with hundreds of notebooks. Each node gives it that notebook's inputs; what a node
differs in (notebook, parameters, dependencies) is an input, so only the nodes whose inputs change lose
their reuse (docs/azureml-sdk.md#reuse).

Quoting: Azure ML substitutes `${{inputs.x}}` into the command text, which then runs in a shell. String
inputs are single-quoted, and their values are made quote-safe when compiled (`names.shell_arg` /
`names.json_arg`): no value can end the quote or smuggle in an Azure ML expression.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.azureml.names import shell_arg
from orchestrator.azureml.snapshot import RUNTIME_DIR
from steps.settings import COMPONENT_SETTINGS, StepSetting

NOTEBOOK_COMPONENT = "orchestrator_notebook"
REPORT_COMPONENT = "orchestrator_report"
STEP_SCRIPT = f"{RUNTIME_DIR}/steps/azureml_step.py"
PACK_SCRIPT = f"{RUNTIME_DIR}/steps/azureml_pack.py"
PACK_COMPONENT = "orchestrator_pack"
PACK_OUTPUT = "result_{}"  # one output per notebook of a pack: what a notebook after it in another node takes
REPORT_SCRIPT = "steps/report_step.py"
RESULT_OUTPUT = "result"
REPORT_OUTPUT = "report"
RUN_KEY = "run_key"
AFTER_INPUT = "after_{}"
# Notebook parameters given when the job is created, over the compiled ones: a published endpoint's `parameters`
# input is bound to it (publish.py); a compiled job leaves it unset, and its `$[[...]]` block drops out.
INVOCATION_INPUT = "invocation_parameters"
INVOCATION_ARGUMENT = f"$[[--invocation-parameters '${{{{inputs.{INVOCATION_INPUT}}}}}']]"


def _invocation_input() -> Any:
    from azure.ai.ml import Input

    return Input(type="string", optional=True,
                 description="Notebook parameters of this run over the compiled ones, a JSON object (endpoints)")


def kernel_policy_arguments(secret_env: tuple[str, ...], pass_env: tuple[str, ...],
                            require_isolation: bool) -> list[str]:
    """What the node's kernels may see (docs/isolation.md): names only, values never enter the pipeline."""
    return [*(f"--secret-env {name}" for name in secret_env), *(f"--pass-env {name}" for name in pass_env),
            *(["--require-isolation"] if require_isolation else [])]


def notebook_command(*, plan_root: str, secret_env: tuple[str, ...], after_slots: int,
                     pass_env: tuple[str, ...] = (), require_isolation: bool = False) -> str:
    parts = [
        f"python {STEP_SCRIPT}",
        f"--plan-root '{shell_arg(plan_root)}'",
        "--step '${{inputs.step}}'",
        "--notebook '${{inputs.notebook}}'",
        "--parameters '${{inputs.parameters}}'",
        "--expect '${{inputs.expect}}'",
        "--kernel '${{inputs.kernel}}'",
        "--kernel-required ${{inputs.kernel_required}}",
        "--retries ${{inputs.retries}}",
        "--target '${{inputs.target}}'",
        "--environment '${{inputs.environment}}'",
        "--pythonpath '${{inputs.pythonpath}}'",
        *(_setting_argument(setting) for setting in COMPONENT_SETTINGS),
        "--run-key '${{inputs.run_key}}'",
        "--output-dir '${{outputs.result}}'",
        INVOCATION_ARGUMENT,
    ]
    parts.extend(kernel_policy_arguments(secret_env, pass_env, require_isolation))
    parts.extend(f"$[[--after-result '${{{{inputs.{AFTER_INPUT.format(i)}}}}}']]" for i in range(after_slots))
    return " ".join(parts)


def _setting_argument(setting: StepSetting) -> str:
    """A step setting on the node's command line; one without a default is left out when its input is unset."""
    argument = f"{setting.option} ${{{{inputs.{setting.component_input}}}}}"
    return f"$[[{argument}]]" if setting.default is None else argument


def notebook_component(*, code: Path, environment: Any, plan_root: str, secret_env: tuple[str, ...],
                       after_slots: int, label: str, pass_env: tuple[str, ...] = (),
                       require_isolation: bool = False) -> Any:
    from azure.ai.ml import Input, Output
    from azure.ai.ml.entities import CommandComponent

    inputs: dict[str, Any] = {
        RUN_KEY: Input(type="string", description="Same key: completed notebooks are reused; new key: all run"),
        "step": Input(type="string", description="Step id (the node name)"),
        "notebook": Input(type="string", description="Notebook path relative to the plan folder"),
        "parameters": Input(type="string", description="papermill parameters, JSON"),
        "expect": Input(type="string", description="Metric rules, JSON"),
        "kernel": Input(type="string"),
        "kernel_required": Input(type="string", description="true: a missing kernel is an error"),
        "retries": Input(type="integer", description="Retries after transient failures only"),
        "target": Input(type="string"),
        "environment": Input(type="string"),
        "pythonpath": Input(type="string", description="Folders relative to the plan put on PYTHONPATH, JSON"),
        **{str(s.component_input): Input(type=s.input_type, optional=s.default is None, description=s.help)
           for s in COMPONENT_SETTINGS},
        INVOCATION_INPUT: _invocation_input(),
    }
    inputs.update(_after_inputs(after_slots, "result folder of a notebook this one runs after"))
    return CommandComponent(
        name=NOTEBOOK_COMPONENT,
        display_name=f"Run notebook ({label})",
        description="Runs one notebook with papermill (steps/run_notebook.py) and logs it to MLflow.",
        command=notebook_command(plan_root=plan_root, secret_env=secret_env, after_slots=after_slots,
                                 pass_env=pass_env, require_isolation=require_isolation),
        inputs=inputs,
        outputs={RESULT_OUTPUT: Output(type="uri_folder", mode="rw_mount")},  # a partial notebook survives (docs/azureml-sdk.md#inputs-and-outputs)
        environment=environment,
        code=str(code),
        is_deterministic=True,  # reuse is what makes "rerun failed only" work (docs/azureml-sdk.md#reuse)
    )


def _after_inputs(after_slots: int, description: str) -> dict[str, Any]:
    """The optional folder inputs a node's after-results are bound to, after_0 up."""
    from azure.ai.ml import Input

    return {AFTER_INPUT.format(index): Input(type="uri_folder", optional=True, description=description)
            for index in range(after_slots)}


def pack_command(*, plan_root: str, secret_env: tuple[str, ...], after_slots: int, size: int,
                 pass_env: tuple[str, ...] = (), require_isolation: bool = False) -> str:
    parts = [
        f"python {PACK_SCRIPT}",
        f"--plan-root '{shell_arg(plan_root)}'",
        "--pack '${{inputs.pack}}'",
        "--run-key '${{inputs.run_key}}'",
        INVOCATION_ARGUMENT,
    ]
    parts.extend(f"--output-dir '${{{{outputs.{PACK_OUTPUT.format(i)}}}}}'" for i in range(size))
    parts.extend(kernel_policy_arguments(secret_env, pass_env, require_isolation))
    # Bound from after_0 up without gaps (compile.py), so the runner's after-result order is the input order.
    parts.extend(f"$[[--after-result '${{{{inputs.{AFTER_INPUT.format(i)}}}}}']]" for i in range(after_slots))
    return " ".join(parts)


def pack_component(*, code: Path, environment: Any, plan_root: str, secret_env: tuple[str, ...], after_slots: int,
                   size: int, label: str, pass_env: tuple[str, ...] = (), require_isolation: bool = False) -> Any:
    """Several short notebooks run one after the other on one node (steps/azureml_pack.py), each with its own
    output folder, as if each had its own node."""
    from azure.ai.ml import Input, Output
    from azure.ai.ml.entities import CommandComponent

    inputs: dict[str, Any] = {
        RUN_KEY: Input(type="string", description="Same key: completed packs are reused; new key: all run"),
        "pack": Input(type="string", description="The notebooks and their settings, in running order, JSON"),
        INVOCATION_INPUT: _invocation_input(),
    }
    inputs.update(_after_inputs(after_slots, "result folder of a notebook in another node"))
    return CommandComponent(
        name=PACK_COMPONENT,
        display_name=f"Run notebooks ({label})",
        description="Runs short notebooks one after the other (steps/azureml_pack.py), each logged to MLflow.",
        command=pack_command(plan_root=plan_root, secret_env=secret_env, after_slots=after_slots, size=size,
                             pass_env=pass_env, require_isolation=require_isolation),
        inputs=inputs,
        outputs={PACK_OUTPUT.format(i): Output(type="uri_folder", mode="rw_mount") for i in range(size)},
        environment=environment,
        code=str(code),
        is_deterministic=True,
    )


def report_command() -> str:
    return " ".join(
        [
            f"python {REPORT_SCRIPT}",
            "--run-key '${{inputs.run_key}}'",
            "--expected '${{inputs.expected}}'",
            "--title '${{inputs.title}}'",
            "--out '${{outputs.report}}'",
            "$[[--devops '${{inputs.devops}}']]",
        ]
    )


def report_component(*, code: Path, environment: Any) -> Any:
    from azure.ai.ml import Input, Output
    from azure.ai.ml.entities import CommandComponent

    return CommandComponent(
        name=REPORT_COMPONENT,
        display_name="Report",
        description="Finds every notebook node's outcome through MLflow and writes results.json, junit.xml, "
        "report.html; publishes to Azure DevOps when configured.",
        command=report_command(),
        inputs={
            RUN_KEY: Input(type="string"),
            "expected": Input(type="string", description="The steps of this pipeline, JSON"),
            "title": Input(type="string"),
            "devops": Input(type="string", optional=True, description="DevOps publishing settings (names, no secrets)"),
        },
        outputs={REPORT_OUTPUT: Output(type="uri_folder", mode="rw_mount")},
        environment=environment,
        code=str(code),
        is_deterministic=False,  # the report must look at this run's notebooks every time (docs/azureml-sdk.md#reuse)
    )
