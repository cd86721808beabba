"""Packing short notebooks per Azure ML node: the choice, the compiled pipeline, the pack runner, and how the
report finds each packed notebook's own MLflow run."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from click.testing import CliRunner  # noqa: E402

from orchestrator.azureml.collect import ExpectedStep  # noqa: E402
from orchestrator.azureml.compile import (  # noqa: E402
    REPORT_NODE,
    TIMEOUT_GRACE_S,
    CompileOptions,
    compile_pipeline,
    pack_label,
)
from orchestrator.azureml.components import AFTER_INPUT, PACK_OUTPUT, RESULT_OUTPUT  # noqa: E402
from orchestrator.azureml.packing import pack_steps  # noqa: E402
from orchestrator.azureml.validation import validate  # noqa: E402
from orchestrator.azureml.watch import node_steps  # noqa: E402
from orchestrator.cli import cli  # noqa: E402
from orchestrator.plan.spec import PackSpec, StepSpec, TargetSpec  # noqa: E402
from tests.builders import make_notebook  # noqa: E402
from tests.history_builders import FakeStep, fake_run  # noqa: E402
from tests.azureml_support import generated_plan, node_inputs  # noqa: E402

TARGETS = {"cpu": TargetSpec("cpu", azureml_compute="cpu"), "gpu": TargetSpec("gpu", gpus=1, azureml_compute="gpu")}


def _step(name: str, *, after: tuple[str, ...] = (), target: str = "cpu", environment: str = "cpu",
          pack: bool | None = None) -> StepSpec:
    return StepSpec(id=name, notebook=f"{name}.ipynb", target=target, environment=environment, kernel="python3",
                    timeout_s=60.0, cell_timeout_s=None, retries=0, after=after, pack=pack)


def _groups(steps: list[StepSpec], expected: dict[str, float], settings: PackSpec | None = None) -> list[list[str]]:
    packing = pack_steps(steps, TARGETS, expected, settings or PackSpec())
    return [[s.id for s in node.steps] for node in packing.nodes]


def test_short_notebooks_of_one_target_and_environment_share_nodes_up_to_the_limit() -> None:
    steps = [_step(f"n{i}") for i in range(7)] + [_step("other_env", environment="gpu")]
    expected = {s.id: 240.0 for s in steps}  # 4 minutes each
    assert _groups(steps, expected, PackSpec(max_minutes=10, under_minutes=10)) == [
        ["n0", "n1"], ["n2", "n3"], ["n4", "n5"], ["n6"], ["other_env"]]
    assert _groups(steps, {}) == [[s.id] for s in steps]  # no durations known: nothing packed
    assert _groups(steps, {**expected, "n1": 1200.0}, PackSpec(max_minutes=60, under_minutes=10))[0] == [
        "n0", "n2", "n3", "n4", "n5", "n6"]  # n1 is not short


def test_opt_out_and_gpu_notebooks_are_alone_unless_asked() -> None:
    steps = [_step("a"), _step("b", pack=False), _step("g1", target="gpu"), _step("g2", target="gpu"),
             _step("g3", target="gpu", pack=True), _step("g4", target="gpu", pack=True), _step("c")]
    assert _groups(steps, {s.id: 1.0 for s in steps}) == [["a", "c"], ["b"], ["g1"], ["g2"], ["g3", "g4"]]


def test_after_inside_a_pack_runs_in_order_and_no_pack_closes_a_cycle_through_another_node() -> None:
    steps = [_step("p1"), _step("x", after=("p1",), pack=False), _step("p2", after=("x",)), _step("p3", after=("p1",)),
             _step("p4")]
    packing = pack_steps(steps, TARGETS, {s.id: 1.0 for s in steps}, PackSpec())
    groups = [[s.id for s in node.steps] for node in packing.nodes]
    # p2 runs after x, which runs after p1: in p1's pack it would make pack -> x -> pack.
    assert groups == [["p1", "p3", "p4"], ["x"], ["p2"]]
    assert packing.before == 5 and packing.after == 3 and packing.saved_node_minutes == 6.0


def test_packs_compile_to_one_labelled_node_each_with_an_output_per_notebook(tmp_path: Path) -> None:
    plan = generated_plan(tmp_path / "repo", count=40)
    # A GPU notebook (own node) between packed ones: nb_025 after nb_024, nb_026 after nb_025.
    edges = {"area_10_nb_025": ("area_09_nb_024",), "area_11_nb_026": ("area_10_nb_025",)}
    plan = dataclasses.replace(plan, steps=tuple(dataclasses.replace(s, after=s.after + edges.get(s.id, ()))
                                                 for s in plan.steps))
    expected = {s.id: 20.0 for s in plan.steps}
    compiled = compile_pipeline(plan, CompileOptions(cache_dir=tmp_path / "cache", expected_durations=expected))
    job, packing = compiled.job, compiled.packing
    validate(job)
    gpu = [s.id for s in plan.steps if plan.targets[s.target].gpus]
    notebook_nodes = {name: node for name, node in job.jobs.items() if name != REPORT_NODE}
    packs = {name: node for name, node in notebook_nodes.items() if "pack" in (node.tags or {})}
    # The GPU notebooks alone; the CPU ones in one pack, except nb_026: in the pack, which holds nb_024, it
    # would make pack -> nb_025 (GPU) -> pack.
    assert len(notebook_nodes) == packing.after == len(gpu) + 2 and len(packs) == 1
    ((name, pack),) = packs.items()
    packed = pack.tags["pack"].split(",")
    assert sorted(packed) == sorted(s.id for s in plan.steps if s.id not in gpu and s.id != "area_11_nb_026")
    assert pack.display_name.startswith("area_01/nb_001.ipynb + area_02/nb_002.ipynb") and "more)" in pack.display_name
    entries = json.loads(node_inputs(pack)["pack"])
    by_step = {e["step"]: e for e in entries}
    # nb_009 runs after nb_008: in the same pack, in order inside it.
    assert by_step["area_09_nb_009"]["after_inside"] == [packed.index("area_08_nb_008")]
    assert set(pack.outputs) == {PACK_OUTPUT.format(i) for i in range(len(packed))}
    # nb_025 (GPU) is after nb_024 (packed): a data edge from that notebook's own output of the pack; nb_026
    # takes nb_025's output, and the packed nb_029 (after nb_026 and nb_014) both kinds.
    gpu_after = node_inputs(job.jobs["area_10_nb_025"])
    assert str(gpu_after[AFTER_INPUT.format(0)]).endswith(
        f"jobs.{name}.outputs.{PACK_OUTPUT.format(packed.index('area_09_nb_024'))}}}}}")
    assert str(node_inputs(job.jobs["area_11_nb_026"])[AFTER_INPUT.format(0)]).endswith(
        f"jobs.area_10_nb_025.outputs.{RESULT_OUTPUT}}}}}")
    # The watcher and the backstop read each packed notebook from its own output.
    assert node_steps(pack, [ExpectedStep(s, f"{s}.ipynb") for s in packed])[:2] == [(packed[0], "result_0"), (packed[1], "result_1")]
    assert node_steps(job.jobs["area_00_nb_000"], [ExpectedStep("area_00_nb_000", "area_00/nb_000.ipynb")]) == [("area_00_nb_000", RESULT_OUTPUT)]
    # Every packed notebook's own limit for each of its attempts, in turn, and one grace period.
    attempts = [math.ceil((s.timeout_s or 0) * (s.retries + 1)) for s in plan.steps if s.id in packed]
    assert pack.limits.timeout == sum(attempts) + TIMEOUT_GRACE_S


def test_pack_label_lists_notebooks_and_shortens_past_the_limit() -> None:
    assert pack_label(["a.ipynb", "b.ipynb"]) == "a.ipynb + b.ipynb"
    long = pack_label([f"folder/notebook_{i:03d}.ipynb" for i in range(40)])
    assert len(long) <= 240 and long.endswith("more)")


def test_compile_with_the_history_of_40_tiny_notebooks_makes_at_most_4_nodes_and_prints_the_saving(
    tmp_path: Path,
) -> None:
    from azure.ai.ml import load_job

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    for i in range(40):
        make_notebook(repo / f"nb_{i:02d}.ipynb", f"x = {i}")
    history = tmp_path / "h.sqlite"
    past = fake_run(tmp_path / "past", run_id="past", started_at="2026-01-01T00:00:00Z", root=repo.resolve(),
                    steps=[FakeStep(f"nb_{i:02d}.ipynb", duration_s=2.5) for i in range(40)])
    runner = CliRunner()
    env = {"ORCHESTRATOR_HISTORY": str(history)}
    assert runner.invoke(cli, ["history", "import", str(past)], env=env).exit_code == 0
    out = tmp_path / "pipeline.yml"
    done = runner.invoke(cli, ["compile", str(repo), "--out", str(out), "--snapshots", str(tmp_path / "cache")], env=env)
    assert done.exit_code == 0, done.output
    assert "packing: 40 notebook nodes -> 1 (40 notebooks in 1 packs); about 117 node-minutes saved at 3 min" in done.output
    job: Any = load_job(out)
    assert job._validate().passed
    assert 1 <= len([name for name in job.jobs if name != REPORT_NODE]) <= 4
    # Without history nothing is packed.
    (tmp_path / "empty").mkdir()
    plain = runner.invoke(cli, ["compile", str(repo), "--out", str(out), "--snapshots", str(tmp_path / "cache")],
                          env={"ORCHESTRATOR_HISTORY": str(tmp_path / "empty" / "h.sqlite")})
    assert "packing: 40 notebook nodes, none packed" in plain.output


@pytest.mark.slow
def test_the_pack_runner_runs_each_notebook_into_its_own_folder_with_after_inside_and_outside(tmp_path: Path) -> None:
    from steps import azureml_pack

    code_root = tmp_path / "snapshot"
    make_notebook(code_root / "nbs" / "fails.ipynb", "raise ValueError('boom')")
    make_notebook(code_root / "nbs" / "after_fails.ipynb", "x = 1")
    make_notebook(code_root / "nbs" / "reads.ipynb", "import json, os\n"
                  "folders = json.loads(os.environ['ORCHESTRATOR_AFTER_OUTPUTS'])\n"
                  "assert open(os.path.join(folders['prep.ipynb'], 'data.txt')).read() == '42'")
    outside = tmp_path / "prep_output"
    outside.mkdir()
    (outside / "data.txt").write_text("42")
    (outside / "result.json").write_text(json.dumps({"step": "prep", "notebook": "prep.ipynb", "status": "passed"}))

    def entry(name: str, inputs: list[int], inside: list[int]) -> dict[str, Any]:
        return {"step": name, "notebook": f"{name}.ipynb", "parameters": {}, "expect": {}, "kernel": "python3",
                "kernel_required": False, "timeout": 60, "cell_timeout": None, "retries": 0, "target": "cpu",
                "environment": "cpu", "pythonpath": [], "output_limit": 100000, "after_inputs": inputs,
                "after_inside": inside}

    pack = [entry("fails", [], []), entry("after_fails", [], [0]), entry("reads", [0], [])]
    outputs = [tmp_path / f"out{i}" for i in range(3)]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "AZUREML_RUN_ID")}
    # As the node runs it: the script by path, its folder first on sys.path, not the package.
    done = subprocess.run([sys.executable, str(Path(azureml_pack.__file__)), "--plan-root", "nbs",
                           "--pack", json.dumps(pack), "--run-key", "k",
                           *[arg for out in outputs for arg in ("--output-dir", str(out))],
                           "--after-result", str(outside), "--code-root", str(code_root)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    code = done.returncode
    results = [json.loads((out / "result.json").read_text()) for out in outputs]
    assert [r["status"] for r in results] == ["failed", "skipped", "passed"], results
    assert "fails.ipynb" in results[1]["reason"]
    assert code == 1
    assert (outputs[2] / "reads.ipynb").is_file()


def test_packed_notebooks_log_child_runs_that_the_report_node_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from orchestrator.azureml import discover
    from orchestrator.history import HistoryStore, mlflow_import
    from steps import mlflow_log

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient()
    experiment = client.create_experiment("packs")
    pipeline = client.create_run(experiment).info.run_id
    node = client.create_run(experiment, tags={"mlflow.parentRunId": pipeline}).info.run_id
    report = client.create_run(experiment, tags={"mlflow.parentRunId": pipeline}).info.run_id
    assert mlflow_log.tag_pack(["a", "b"], run_id=node)
    for name, status in (("a", "passed"), ("b", "failed")):
        out = tmp_path / name
        out.mkdir()
        (out / "result.json").write_text(json.dumps({"step": name, "notebook": f"{name}.ipynb", "status": status,
                                                     "metrics": {"acc": 0.5}, "duration_s": 1.0}))
        assert mlflow_log.log_child_step(out, run_key="k", name=f"{name}.ipynb", parent_run_id=node)
    found = discover.find_step_runs(client, own_run=report, run_key="k",
                                    expected=[ExpectedStep("a", "a.ipynb"), ExpectedStep("b", "b.ipynb")])
    assert set(found) == {"a", "b"}
    assert [r.status for r in found["a"]] == ["FINISHED"] and found["b"][0].status == "FAILED"
    child = client.get_run(found["a"][0].run_id)
    assert child.data.tags["mlflow.parentRunId"] == node and child.data.metrics["acc"] == 0.5
    assert mlflow_log.PACK_TAG == discover.PACK_TAG == mlflow_import.PACK_TAG
    assert (mlflow_log.STEP_TAG, mlflow_log.NOTEBOOK_TAG, mlflow_log.STATUS_TAG) == (
        mlflow_import.STEP_TAG, mlflow_import.NOTEBOOK_TAG, mlflow_import.STATUS_TAG)

    # The same runs read back into the history: the pipeline's run with its commit and branch tags.
    client.set_tag(pipeline, "commit", "abc123")
    client.set_tag(pipeline, "branch", "main")
    client.set_terminated(pipeline, status="FAILED")
    store = HistoryStore(tmp_path / "h.sqlite")
    imported = CliRunner().invoke(cli, ["history", "import-mlflow", "packs", "--root", str(tmp_path),
                                        "--history", str(store.path)])
    assert imported.exit_code == 0, imported.output
    assert f"imported {pipeline}: 2 notebooks, failed" in imported.output
    history = store.notebook_history(root=str(tmp_path.resolve()))
    (a,) = history["a.ipynb"]
    assert (a.run_id, a.backend, a.commit, a.branch) == (pipeline, "azureml", "abc123", "main")
    assert a.record.metrics == {"acc": 0.5} and a.record.duration_s == 1.0 and a.record.status == "passed"
    assert history["b.ipynb"][0].record.status == "failed"
    shutil.rmtree(tmp_path / "mlruns")


# A packed pipeline run by `orchestrator emulate`: tests/test_emulator.py.


def test_a_followed_azure_ml_run_records_the_jobs_commit_and_branch_for_the_history(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dataclasses import replace

    from orchestrator.azureml.backend import azureml_job, job_tag
    from orchestrator.azureml.submit import Submitted
    from orchestrator.history import run_from_folder
    from orchestrator.results import load_results

    job = SimpleNamespace(tags={"commit": "abc123", "branch": "topic", "plan": "orchestrator.yml"})
    submitted = Submitted("job-1", None, True, job)
    assert (job_tag(submitted, "commit"), job_tag(submitted, "branch")) == ("abc123", "topic")
    folder = fake_run(tmp_path / "run", run_id="r", started_at="2026-01-01T00:00:00Z", root=tmp_path,
                      steps=[FakeStep("a.ipynb")], backend="azureml", commit=None, branch=None)
    followed = replace(load_results(folder), azureml=azureml_job(submitted, "key", status="Completed"),
                       commit=job_tag(submitted, "commit"), branch=job_tag(submitted, "branch"))
    (folder / "results.json").write_text(json.dumps(followed.to_json()))
    assert json.loads((folder / "results.json").read_text())["azureml"]["job_name"] == "job-1"
    entry = run_from_folder(folder)
    assert (entry.backend, entry.commit, entry.branch) == ("azureml", "abc123", "topic")


@pytest.mark.slow
def test_run_emulate_wait_then_rerun_failed_reuses_the_pack_and_the_node_that_passed(tmp_path: Path) -> None:
    """`run --emulate --wait`, then `rerun --failed` from the workspace folder: a passed pack and a passed
    single node are reused, the failed node runs again, the report node is never reused (not deterministic)."""
    pytest.importorskip("mlflow")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "orchestrator.yml").write_text(
        "version: 1\nexperiment: emulated-pack-reuse\ndefaults: {retries: 0}\nnotebooks:\n"
        "  - glob: '*.ipynb'\n    expected_duration: 5s\n  - path: b_fail.ipynb\n    pack: false\n"
        "  - path: d_alone.ipynb\n    pack: false\n", encoding="utf-8")
    make_notebook(repo / "a_pass.ipynb", "x = 1")
    make_notebook(repo / "b_fail.ipynb", "raise ValueError('no')")
    make_notebook(repo / "c_pass.ipynb", "x = 3")
    make_notebook(repo / "d_alone.ipynb", "x = 4")
    workspace = tmp_path / "workspace"
    env = {"ORCHESTRATOR_HISTORY": str(tmp_path / "h.sqlite")}
    common = ["--backend", "azureml", "--emulate", "--emulator-dir", str(workspace), "--wait"]
    runner = CliRunner()
    first = runner.invoke(cli, ["run", str(repo), "--out", str(tmp_path / "run1"), *common], env=env)
    assert first.exit_code == 1, first.output
    job = json.loads((tmp_path / "run1" / "results.json").read_text())["azureml"]["job_name"]
    again = runner.invoke(cli, ["rerun", job, "--failed", "--out", str(tmp_path / "run2"), *common], env=env)
    assert again.exit_code == 1, again.output
    rerun = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert {s["step"]: s["status"] for s in rerun["steps"]} == {"a_pass": "passed", "b_fail": "failed",
                                                                "c_pass": "passed", "d_alone": "passed"}
    children = json.loads((workspace / "jobs" / rerun["azureml"]["job_name"] / "state.json").read_text())["children"]
    assert children["d_alone"]["reused_from"] and not children["b_fail"]["reused_from"]  # b ran again
    assert children["orchestrator_report"]["reused_from"] is None
    [pack] = [name for name in children if name.startswith("pack_")]
    assert children[pack]["reused_from"]
