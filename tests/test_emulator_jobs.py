"""The Azure ML paths against the emulated workspace with real kernels (issue 8, item 4): cancelling
a running pipeline, a schedule firing, and the trigger's kick_off -> wrap_up watchdog closing the DevOps job when the report node never ran."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

pytestmark = pytest.mark.slow  # emulated pipelines with real kernels


from orchestrator.azureml.emulator import EmulatedWorkspace  # noqa: E402
from tests.builders import make_notebook  # noqa: E402
from tests.devops_server import DevOpsServer  # noqa: E402

TWO = "version: 1\nexperiment: emulated-jobs\ndefaults: {retries: 0}\nnotebooks:\n  - glob: '*.ipynb'\n"


def _repo(root: Path, notebooks: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    (root / "orchestrator.yml").write_text(TWO)
    for name, source in notebooks.items():
        make_notebook(root / name, source)
    return root


# `run --emulate --wait` then `rerun --failed`: tests/test_azureml_packing.py (a reused pack and a reused node).


def test_cancel_stops_the_running_node_marks_the_rest_and_still_reports(tmp_path: Path) -> None:
    from tests.emulator_support import compiled

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "orchestrator.yml").write_text(TWO + "  - path: b_after.ipynb\n    after: [a_slow.ipynb]\n")
    make_notebook(repo / "a_slow.ipynb", "import time\ntime.sleep(120)")
    make_notebook(repo / "b_after.ipynb", "x = 1")
    job = compiled(repo, tmp_path / "build" / "pipeline.yml")
    workspace = EmulatedWorkspace(tmp_path / "workspace", node_environment={"ORCHESTRATOR_DISCOVERY_SETTLE_S": "0"})
    try:
        job.name = "to_cancel"
        workspace.jobs.create_or_update(job)
        deadline = time.monotonic() + 120
        while workspace.state("to_cancel").children.get("a_slow") is None or \
                workspace.state("to_cancel").children["a_slow"].status != "Running":
            assert time.monotonic() < deadline, "the node never started"
            time.sleep(0.1)
        started = time.monotonic()
        workspace.jobs.begin_cancel("to_cancel").result()
        assert time.monotonic() - started < 60  # not the notebook's 120 s
        state = workspace.state("to_cancel")
        assert state.status == "Canceled"
        assert state.children["a_slow"].status == "Canceled" and state.children["b_after"].status == "Canceled"
        assert state.children["orchestrator_report"].status == "Completed"  # on_finalize runs after a cancel
        report = json.loads((Path(state.outputs["report"]) / "results.json").read_text())
        assert [s["step"] for s in report["steps"]] == ["a_slow", "b_after"]
        assert all(s["status"] != "passed" for s in report["steps"])
    finally:
        workspace.close()


# A schedule firing with its trigger time as run_key: tests/test_azureml_backstop.py (its event reports it).


def test_the_watchdog_reports_and_closes_the_devops_job_when_the_report_node_never_ran(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    from tests.emulator_support import kicked_off_without_report_node

    with kicked_off_without_report_node(tmp_path, devops_server.message_properties()) as pipeline:
        outcome = pipeline.watchdog()
        assert "reported and closed" in outcome.detail, outcome
        [event] = devops_server.task_completed_events()
        assert str(event["result"]).lower() == "failed"
