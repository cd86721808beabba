"""Compiling a plan into an Azure ML pipeline job, checked offline with azure-ai-ml's own validator."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml import collect  # noqa: E402
from orchestrator.azureml.compile import (  # noqa: E402
    REPORT_NODE,
    TIMEOUT_GRACE_S,
    CompileOptions,
    compile_plan,
)
from orchestrator.azureml.components import RESULT_OUTPUT  # noqa: E402
from orchestrator.azureml.export import write_pipeline  # noqa: E402
from orchestrator.azureml.validation import validate  # noqa: E402
from orchestrator.errors import InvalidInputError  # noqa: E402
from tests.fake_mlclient import rest_body  # noqa: E402
from tests.azureml_support import examples_plan, make_repo, node_inputs  # noqa: E402

NOTEBOOK_NODES = {"data_00_prepare", "recommenders_01_similarity", "models_02_train", "models_03_serverless", "gpu_05_gpu"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("repo")
    plan_root = make_repo(root)
    plan = examples_plan(plan_root)
    job = compile_plan(plan, CompileOptions(run_key="key-1", cache_dir=root.parent / "cache", commit="abc123",
                                            repository="https://dev.azure.com/org/proj/_git/notebooks"))
    return job, plan_root


def test_the_compiled_job_passes_azure_ml_validation(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    result = job._validate()
    assert result.passed, result.error_messages
    validate(job)  # the orchestrator's wrapper agrees


def test_one_node_per_runnable_notebook_named_by_step_id_and_labelled_by_path(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    assert set(job.jobs) == NOTEBOOK_NODES | {REPORT_NODE}
    assert job.jobs["recommenders_01_similarity"].display_name == "recommenders/01_similarity.ipynb"
    assert job.jobs["models_02_train"].tags == {"notebook": "models/02_train.ipynb", "step": "models_02_train"}
    assert job.experiment_name == "examples"
    assert job.tags["repository"] == "https://dev.azure.com/org/proj/_git/notebooks"
    assert job.tags["commit"] == "abc123"


def test_skipped_notebooks_get_no_node_but_the_report_expects_them(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    expected = collect.decode_expected(node_inputs(job.jobs[REPORT_NODE])["expected"])
    by_step = {e.step: e for e in expected}
    assert by_step["scratch_wip"].skip == "work in progress"
    assert "scratch/wip.ipynb" in str(by_step["scratch_after_wip"].skip)
    assert [e.step for e in expected if not e.skip] == [
        "data_00_prepare", "recommenders_01_similarity", "models_02_train", "models_03_serverless", "gpu_05_gpu"]


def test_compute_follows_each_notebooks_target(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    assert job.jobs["data_00_prepare"].compute == "cpu-cluster"
    assert job.jobs["gpu_05_gpu"].compute == "gpu-cluster"
    serverless = job.jobs["models_03_serverless"]
    assert serverless.compute == "serverless"
    assert serverless.resources.instance_type == "Standard_DS3_v2"
    assert job.jobs[REPORT_NODE].compute == "cpu-cluster"  # where most CPU notebooks run


def test_one_environment_object_per_distinct_definition(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    envs = {name: node.component.environment for name, node in job.jobs.items()}
    cpu = envs["data_00_prepare"]
    assert all(envs[name] is cpu for name in ("recommenders_01_similarity", "models_02_train", "models_03_serverless",
                                              REPORT_NODE))
    assert envs["gpu_05_gpu"] is not cpu
    assert len({id(env) for env in envs.values()}) == 2
    assert cpu.image.endswith("openmpi4.1.0-ubuntu22.04") and "papermill=2.6.0" in json.dumps(cpu.conda_file)
    assert "cuda11.8" in envs["gpu_05_gpu"].image and "pytorch-cuda=11.8" in json.dumps(envs["gpu_05_gpu"].conda_file)
    # Same environment -> same component: Azure ML registers it once, not once per notebook.
    assert job.jobs["data_00_prepare"].component is job.jobs["models_02_train"].component


def test_every_notebook_node_shares_one_code_snapshot(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    codes = {str(node.component.code) for name, node in job.jobs.items() if name != REPORT_NODE}
    assert len(codes) == 1
    snapshot = Path(codes.pop())
    shipped = {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}
    assert "notebooks/recommenders/01_similarity.ipynb" in shipped
    assert ".orchestrator-runtime/steps/azureml_step.py" in shipped
    assert ".orchestrator-runtime/steps/run_notebook.py" in shipped
    assert not any(part in path for path in shipped for part in (".venv/", "myenv/", ".ipynb_checkpoints", ".git/",
                                                                    "data/output", ".orchestrator/", "run.log"))


def test_node_timeout_is_the_notebooks_own_limit_for_every_attempt_plus_grace(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    assert job.jobs["data_00_prepare"].limits.timeout == 600 + TIMEOUT_GRACE_S  # retries=0
    assert job.jobs["recommenders_01_similarity"].limits.timeout == math.ceil(600 * 2) + TIMEOUT_GRACE_S  # retries=1
    assert job.jobs["models_02_train"].limits is None or job.jobs["models_02_train"].limits.timeout is None
    assert node_inputs(job.jobs["data_00_prepare"])["timeout"] == 600.0
    assert node_inputs(job.jobs["models_02_train"]).get("timeout") is None


def test_after_becomes_a_data_edge_from_the_dependencys_result_folder(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    rest = json.loads(rest_body(job))["properties"]["jobs"]
    edge = rest["recommenders_01_similarity"]["inputs"]["after_0"]["value"]
    assert edge == "${{parent.jobs.data_00_prepare.outputs.result}}"
    assert "after_0" not in rest["models_02_train"]["inputs"]
    output = job.jobs["data_00_prepare"].component.outputs[RESULT_OUTPUT]
    assert (output.type, output.mode) == ("uri_folder", "rw_mount")


def test_inputs_carry_run_key_and_quote_safe_parameters(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    assert job.inputs["run_key"]._data == "key-1"
    inputs = node_inputs(job.jobs["models_03_serverless"])
    assert "'" not in inputs["parameters"] and "$" not in inputs["parameters"] and "[[" not in inputs["parameters"]
    assert json.loads(inputs["parameters"]) == {"alphas": [[0.1, 1.0]], "name": "it's ${{x}}"}
    rest = json.loads(rest_body(job))["properties"]["jobs"]
    assert rest["models_02_train"]["inputs"]["run_key"]["value"] == "${{parent.inputs.run_key}}"


def test_the_report_node_is_isolated_and_runs_on_finalize(compiled: tuple[Any, Path]) -> None:
    job, _ = compiled
    assert job.settings.on_finalize == REPORT_NODE
    assert job.settings.continue_on_step_failure is True
    report = job.jobs[REPORT_NODE]
    assert report.component.is_deterministic is False
    assert job.jobs["data_00_prepare"].component.is_deterministic is True
    rest = json.loads(rest_body(job))["properties"]
    assert rest["settings"]["on_finalize"] == REPORT_NODE
    report_inputs = rest["jobs"][REPORT_NODE]["inputs"]
    assert report_inputs["run_key"]["value"] == "${{parent.inputs.run_key}}"
    assert not any("parent.jobs" in json.dumps(value) for value in report_inputs.values())
    for name, node in rest["jobs"].items():
        if name != REPORT_NODE:
            assert REPORT_NODE not in json.dumps(node.get("inputs", {}))


def test_no_secret_value_reaches_what_would_be_submitted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "tok-SYSTEM-5e3c7a91")
    monkeypatch.setenv("NOTEBOOK_PAT", "pat-PLAN-0b6d2f48")
    plan_root = make_repo(tmp_path / "repo")
    plan = examples_plan(plan_root, secret_env=("NOTEBOOK_PAT", "SYSTEM_ACCESSTOKEN"), pass_env=("HF_TOKEN",),
                         isolation="required")
    options = CompileOptions(
        cache_dir=tmp_path / "cache",
        repository="https://builder:tok-SYSTEM-5e3c7a91@dev.azure.com/org/proj/_git/notebooks",
        devops={"key_vault_url": "https://kv.vault.azure.net/", "token_secret": "devops-token",
                "properties": {"PlanUrl": "https://dev.azure.com/org/", "ProjectId": "p", "PlanId": "1", "JobId": "2",
                               "TimelineId": "3", "TaskInstanceId": "4"}},
    )
    job = compile_plan(plan, options)
    validate(job)
    body = rest_body(job)
    assert "tok-SYSTEM-5e3c7a91" not in body and "pat-PLAN-0b6d2f48" not in body
    assert "--secret-env NOTEBOOK_PAT" in body  # the name travels, so the runner keeps it from the kernel
    assert "--pass-env HF_TOKEN" in body and "--require-isolation" in body  # the plan's kernel policy travels too
    assert "devops-token" in body and job.tags["repository"] == "https://dev.azure.com/org/proj/_git/notebooks"
    for node in job.jobs.values():
        assert not node.environment_variables


def test_a_token_in_the_devops_settings_is_refused(tmp_path: Path) -> None:
    plan = examples_plan(make_repo(tmp_path / "repo"))
    with pytest.raises(InvalidInputError, match="AuthToken"):
        compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache",
                                          devops={"properties": {"PlanId": "1", "AuthToken": "eyJ0eXAi"}}))


def test_exported_yaml_loads_back_with_load_job_keeping_on_finalize(compiled: tuple[Any, Path], tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    job, _ = compiled
    out = tmp_path / "out" / "pipeline.yml"
    write_pipeline(job, out, source="test")
    text = out.read_text()
    assert "on_finalize: orchestrator_report" in text
    assert "code: ../" in text  # relative to the YAML file
    loaded: Any = load_job(out)
    assert loaded.settings.on_finalize == REPORT_NODE  # kept: the settings schema lets unknown keys through
    assert set(loaded.jobs) == set(job.jobs)
    assert loaded.jobs["gpu_05_gpu"].compute == "gpu-cluster"
    assert loaded.jobs["models_03_serverless"].compute == "serverless"
    assert loaded.jobs["models_03_serverless"].resources.instance_type == "Standard_DS3_v2"
    assert loaded.jobs["data_00_prepare"].limits.timeout == job.jobs["data_00_prepare"].limits.timeout
    result = loaded._validate()
    assert result.passed, result.error_messages
    assert '"on_finalize": "orchestrator_report"' in rest_body(loaded)


def test_the_exported_dict_dumps_each_component_once_and_equals_the_sdks(compiled: tuple[Any, Path]) -> None:
    from orchestrator.azureml.export import job_dict

    job, _ = compiled
    shared = [node for node in job.jobs.values() if node.component is job.jobs["data_00_prepare"].component]
    assert len(shared) > 1
    assert json.dumps(job_dict(job)) == json.dumps(job._to_dict())


def test_the_yaml_is_the_text_of_the_pure_python_dumper(compiled: tuple[Any, Path], tmp_path: Path) -> None:
    import yaml

    from orchestrator.azureml.export import HEADER, pipeline_dict

    job, _ = compiled
    out = tmp_path / "pipeline.yml"
    write_pipeline(job, out, source="here")
    expected = yaml.safe_dump(pipeline_dict(job, tmp_path), sort_keys=False, width=120, allow_unicode=True)
    assert out.read_text(encoding="utf-8") == HEADER.format(source="here") + expected


def test_the_real_examples_plan_compiles_and_validates(tmp_path: Path) -> None:
    from orchestrator.plan import load_plan

    examples = Path(__file__).resolve().parents[1] / "examples"
    plan = load_plan(examples)
    job = compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache"))
    validate(job)
    runnable = [s for s in plan.steps if s.skip is None]
    assert len(job.jobs) == len(runnable) + 1
    gpu = [s.id for s in runnable if plan.targets[s.target].gpus]
    assert gpu and all(job.jobs[i].compute == "gpu-cluster" for i in gpu)
    assert len({id(node.component.environment) for node in job.jobs.values()}) == 2


def test_an_unknown_target_is_an_input_error(tmp_path: Path) -> None:
    plan = examples_plan(make_repo(tmp_path / "repo"))
    broken = examples_plan(plan.root, targets={"cpu": plan.targets["cpu"]})
    with pytest.raises(InvalidInputError, match="unknown target 'gpu'"):
        compile_plan(broken, CompileOptions(cache_dir=tmp_path / "cache"))


def test_a_plan_with_nothing_to_run_still_has_its_report(tmp_path: Path) -> None:
    plan = examples_plan(make_repo(tmp_path / "repo"))
    from dataclasses import replace

    skipped = examples_plan(plan.root, steps=tuple(replace(s, skip="not today") for s in plan.steps))
    job = compile_plan(skipped, CompileOptions(cache_dir=tmp_path / "cache"))
    validate(job)
    assert set(job.jobs) == {REPORT_NODE} and job.settings.on_finalize is None  # the only node runs anyway


def test_a_run_key_is_made_command_line_safe_but_an_expression_is_kept(tmp_path: Path) -> None:
    from orchestrator.azureml.compile import pipeline_run_key

    assert pipeline_run_key("${{creation_context.trigger_time}}") == "${{creation_context.trigger_time}}"
    assert pipeline_run_key("20261126-020000") == "20261126-020000"
    assert "'" not in pipeline_run_key("it's") and pipeline_run_key("it's").startswith("json:")


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from orchestrator.azureml.sdk import require
    from orchestrator.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'notebook-orchestrator\[azureml\]'"):
        require()


def test_an_empty_environment_is_the_stock_one_for_the_steps_hardware_and_a_registered_one_is_referenced(
        tmp_path: Path) -> None:
    from dataclasses import replace

    from orchestrator.azureml.environments import CPU_IMAGE, GPU_IMAGE
    from orchestrator.plan.spec import EnvironmentSpec

    plan = examples_plan(make_repo(tmp_path / "repo"))
    steps = tuple(replace(s, environment="default") for s in plan.steps)
    steps = steps[:2] + (replace(steps[2], environment="curated"),) + steps[3:]
    plan = examples_plan(plan.root, steps=steps, environments={
        "default": EnvironmentSpec("default"), "curated": EnvironmentSpec("curated", azureml="sklearn-1.5:3")})
    job = compile_plan(plan, CompileOptions(cache_dir=tmp_path / "cache"))
    validate(job)
    cpu, gpu = job.jobs["data_00_prepare"].component.environment, job.jobs["gpu_05_gpu"].component.environment
    assert cpu.image == CPU_IMAGE and gpu.image == GPU_IMAGE
    assert "pytorch-cuda=11.8" in json.dumps(gpu.conda_file) and "pytorch" not in json.dumps(cpu.conda_file)
    assert job.jobs["models_02_train"].component.environment == "azureml:sklearn-1.5:3"
