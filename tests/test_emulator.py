"""The emulated Azure ML workspace: the pieces without kernels (command lines, the package check, the YAML
it receives), then `orchestrator emulate` end to end on tiny notebooks with real kernels, one of them packed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from click.testing import CliRunner  # noqa: E402

from orchestrator.azureml.collect import ExpectedStep  # noqa: E402
from orchestrator.azureml.emulator import commandline, packages  # noqa: E402
from orchestrator.cli import cli  # noqa: E402
from tests.builders import make_notebook  # noqa: E402
from tests.emulator_support import compiled  # noqa: E402

# Real kernels or whole pipelines for every test: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def test_optional_blocks_are_kept_or_dropped_and_bindings_substituted() -> None:
    command = "python s.py --a '${{inputs.a}}' $[[--b ${{inputs.b}}]] $[[--c '${{inputs.c}}']] --out ${{outputs.o}}"
    assert commandline.render(command, {"a": "x y", "b": None, "c": "3"}, {"o": "/out"}) == \
        "python s.py --a 'x y'  --c '3' --out /out"
    with pytest.raises(commandline.CommandError, match="inputs.a"):
        commandline.render(command, {"a": None, "b": "1", "c": "2"}, {"o": "/out"})


def test_package_check_names_what_the_environment_lacks(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "main.py").write_text(
        "import json\nimport yaml\nfrom helper import go\ntry:\n    import jinja2\nexcept ImportError:\n    pass\n"
        "def later():\n    import papermill\nRUNNER = 'other.py'\n")
    (tmp_path / "steps" / "helper.py").write_text("import nbformat\ndef go(): pass\n")
    (tmp_path / "steps" / "other.py").write_text("import zmq\n")
    conda = {"dependencies": ["python=3.11", "pyyaml=6", {"pip": ["nbformat==5.10.4"]}]}
    missing = packages.missing_packages("python steps/main.py --x 1", tmp_path, conda)
    # papermill (a lazy import) and zmq (in a script main.py runs) are missing; jinja2 is optional
    assert sorted(missing) == ["papermill", "zmq"]
    assert missing["zmq"] == "steps/other.py"


def test_exported_pipeline_keeps_every_notebook_nodes_display_name_and_tags(tmp_path: Path) -> None:
    """Audit fix: PipelineJob._to_dict() drops node display_name and tags; the export writes them back."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "orchestrator.yml").write_text("version: 1\nnotebooks:\n  - glob: 'nb/*.ipynb'\n")
    make_notebook(repo / "nb" / "one.ipynb", "x = 1")
    make_notebook(repo / "nb" / "two.ipynb", "x = 2")
    job = compiled(repo, tmp_path / "build" / "pipeline.yml")
    for name in ("nb_one", "nb_two"):
        node = job.jobs[name]
        assert node.display_name == f"nb/{name[3:]}.ipynb"
        assert node.tags == {"notebook": f"nb/{name[3:]}.ipynb", "step": name}


def test_emulate_runs_the_compiled_file_with_real_kernels_one_node_or_a_pack_per_notebook(tmp_path: Path) -> None:
    """`orchestrator emulate FILE` on a compiled pipeline where one notebook has its own node and three share a
    pack (the history says they are short): one result per notebook, and the MLflow runs the service would hold."""
    from mlflow.tracking import MlflowClient

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "orchestrator.yml").write_text(
        "version: 1\nexperiment: emulated-cli\ndefaults: {retries: 0}\nnotebooks:\n"
        "  - glob: '*.ipynb'\n    expected_duration: 5s\n  - path: c_after.ipynb\n    after: [b_fail.ipynb]\n"
        "  - path: a_pass.ipynb\n    pack: false\n")
    # mlflow inside the notebook attaches to the node's own run, as on the service
    # (mlflow takes MLFLOW_RUN_ID out of the environment when it resumes the run: compare first)
    make_notebook(repo / "a_pass.ipynb", "import mlflow, os\nassert os.environ['AZUREML_RUN_ID'] == os.environ['MLFLOW_RUN_ID']\n"
                                         "mlflow.log_metric('inside', 1.0)")
    make_notebook(repo / "b_fail.ipynb", "raise ValueError('no')")
    make_notebook(repo / "c_after.ipynb", "x = 1")
    make_notebook(repo / "d_pass.ipynb", "x = 2")
    pipeline = tmp_path / "build" / "pipeline.yml"
    runner = CliRunner()
    env = {"ORCHESTRATOR_HISTORY": str(tmp_path / "h.sqlite")}
    built = runner.invoke(cli, ["compile", str(repo), "--out", str(pipeline)], env=env)
    assert built.exit_code == 0, built.output
    assert "packing: 4 notebook nodes -> 2 (3 notebooks in 1 packs)" in built.output
    out = tmp_path / "run"
    workspace = tmp_path / "workspace"
    done = runner.invoke(cli, ["emulate", str(pipeline), "--out", str(out), "--emulator-dir", str(workspace)], env=env)
    assert done.exit_code == 1, done.output  # a notebook failed: exit 1, as `run`
    results = json.loads((out / "results.json").read_text())
    assert {s["step"]: s["status"] for s in results["steps"]} == {"a_pass": "passed", "b_fail": "failed",
                                                                  "c_after": "skipped", "d_pass": "passed"}
    assert results["reported_by"] == "azureml report node" and (out / "report.html").is_file()
    assert (out / "junit.xml").read_text().count("<testcase") == 4
    assert (out / "steps" / "a_pass" / "a_pass.ipynb").is_file() and (out / "steps" / "d_pass" / "d_pass.ipynb").is_file()

    client = MlflowClient(tracking_uri=(workspace / "mlruns").resolve().as_uri())
    [experiment] = [e for e in client.search_experiments() if e.name == "emulated-cli"]
    every = client.search_runs([experiment.experiment_id])
    [pack] = [r for r in every if r.data.tags.get("orchestrator.pack")]
    assert pack.data.tags["orchestrator.pack"] == "b_fail,c_after,d_pass"
    packed = {r.data.tags["orchestrator.step"]: r for r in every if r.data.tags.get("mlflow.parentRunId") == pack.info.run_id}
    assert {k: r.data.tags["orchestrator.status"] for k, r in packed.items()} == {
        "b_fail": "failed", "c_after": "skipped", "d_pass": "passed"}
    runs = {r.data.tags.get("step"): r for r in every if r.info.run_id not in {p.info.run_id for p in packed.values()}}
    pipeline_run = runs.pop(None)  # the pipeline's own run: no node tags
    assert set(runs) == {"a_pass", pack.data.tags.get("step"), "orchestrator_report"}
    for run in runs.values():
        assert run.data.tags["mlflow.parentRunId"] == pipeline_run.info.run_id
    assert runs["a_pass"].data.metrics["inside"] == 1.0
    assert runs["a_pass"].data.tags["orchestrator.status"] == "passed"
    assert runs["a_pass"].data.tags["mlflow.runName"] == "a_pass.ipynb"
    assert (runs["a_pass"].info.status, pack.info.status) == ("FINISHED", "FAILED")


def test_emulate_refuses_bad_input_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    def exit_code(*args: str) -> int:
        with pytest.raises(SystemExit) as stopped:
            main(["emulate", *args, "--out", str(tmp_path / "run")])
        return int(stopped.value.code or 0)

    assert exit_code(str(tmp_path / "missing.yml")) == 2
    assert "no such pipeline file" in capsys.readouterr().err
    (tmp_path / "p.yml").write_text("type: pipeline\njobs: {}\n")
    assert exit_code(str(tmp_path / "p.yml"), "--assume", "optimism") == 2
    assert "unknown assumption" in capsys.readouterr().err
    (tmp_path / "bad.yml").write_text("type: command\ncommand: [\n")
    assert exit_code(str(tmp_path / "bad.yml")) == 2
    assert "bad.yml" in capsys.readouterr().err


def _store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks for it; the emulator's store is one
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    return client, str(client.create_experiment("x"))


def _node_run(client: Any, experiment: str, parent: str, step: str, status: str, key: str = "k") -> str:
    run = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "step": step, "orchestrator.step": step,
                                              "orchestrator.run_key": key})
    client.set_terminated(run.info.run_id, status)
    time.sleep(0.02)  # distinct start times
    return str(run.info.run_id)


EXPECTED = [ExpectedStep("a", "a.ipynb"), ExpectedStep("b", "b.ipynb"), ExpectedStep("c", "c.ipynb", after=("b",))]


def test_without_its_parent_tag_the_report_takes_the_newest_pipeline_with_its_run_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.azureml import discover

    client, experiment = _store(tmp_path, monkeypatch)
    old_a = _node_run(client, experiment, "p1", "a", "FINISHED")
    _node_run(client, experiment, "p1", "b", "FAILED")
    new_b = _node_run(client, experiment, "p2", "b", "FAILED")  # the rerun: a reused and hidden, b ran again
    me = client.create_run(experiment, tags={}).info.run_id  # the finalize node's run, no mlflow.parentRunId
    found = discover.find_step_runs(client, own_run=me, run_key="k", expected=EXPECTED)
    assert [r.run_id for r in found["b"]] == [new_b]  # this pipeline's failed b, not the first one's
    assert found["a"][0].run_id == old_a and found["a"][0].reused
    assert discover.unexplained(EXPECTED, found) == []  # c comes after the failed b: it never starts


def test_the_report_searches_again_while_a_run_is_missing_without_a_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.azureml import discover

    client, experiment = _store(tmp_path, monkeypatch)
    _node_run(client, experiment, "p1", "a", "FINISHED")
    me = client.create_run(experiment, tags={"mlflow.parentRunId": "p1"}).info.run_id
    late: list[str] = []

    def sleep(seconds: float) -> None:  # the index catches up with b and c while the report waits
        if not late:
            late.append(_node_run(client, experiment, "p1", "b", "FINISHED"))
            late.append(_node_run(client, experiment, "p1", "c", "FINISHED"))

    found = discover.find_settled(client, own_run=me, run_key="k", expected=EXPECTED, settle_s=30, sleep=sleep)
    assert sorted(found) == ["a", "b", "c"] and found["b"][0].run_id == late[0]
    started = time.monotonic()
    nothing = discover.find_settled(client, own_run=me, run_key="nope", expected=[ExpectedStep("z", "z")],
                                    settle_s=0.3, poll_s=0.1)
    assert nothing == {} and time.monotonic() - started < 5  # bounded: a node that never ran is not waited for
