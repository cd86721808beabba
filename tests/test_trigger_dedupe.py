"""Duplicates on the local backend (`orchestrator handle`): a marker per (PlanId, JobId, TaskInstanceId), so a
second delivery never starts a second run, whatever state the first one is in. No kernels: the earlier
deliveries' states are written by hand, as a crash would leave them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.trigger.dedupe import LocalMarkers
from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from orchestrator.trigger.services import Services
from tests.conftest_devops import make_run_folder
from tests.devops_server import DevOpsServer
from tests.trigger_support import kick_off_body, make_services, notebook_repo, raw, task_log


@dataclass
class Delivery:
    message: RawMessage
    services: Services
    markers: LocalMarkers
    key: str


def _message(tmp_path: Path, server: DevOpsServer) -> Delivery:
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    services = make_services(tmp_path, backend="local")
    return Delivery(raw(kick_off_body(str(repo.bare), commit, plan="."), server.message_properties()), services,
                    LocalMarkers(services.settings.state_dir), f"{server.plan_id}/{server.job_id}/{server.task_id}")


def test_a_claim_is_taken_once() -> None:
    import tempfile

    markers = LocalMarkers(Path(tempfile.mkdtemp()))
    assert markers.claim("p/j/t") is None
    earlier = markers.claim("p/j/t")
    assert earlier is not None and earlier.status == "running" and earlier.alive  # this very process
    assert "AuthToken" not in json.dumps(earlier.data)


def test_a_duplicate_while_the_first_still_runs_starts_nothing(tmp_path: Path,
                                                               devops_server: DevOpsServer) -> None:
    d = _message(tmp_path, devops_server)
    message, services, markers, key = d.message, d.services, d.markers, d.key
    assert markers.claim(key) is None  # the first delivery, still running in this process
    outcome = handle(message, services)
    assert outcome.action == "complete" and "already being handled" in outcome.detail
    assert devops_server.task_completed_events() == [] and not (tmp_path / "state" / "runs").exists()


def test_a_duplicate_after_a_crash_mid_run_reports_what_the_run_recorded_and_closes_the_job_once(
        tmp_path: Path, devops_server: DevOpsServer) -> None:
    d = _message(tmp_path, devops_server)
    message, services, markers, key = d.message, d.services, d.markers, d.key
    run_dir = make_run_folder(tmp_path / "crashed-run")
    assert markers.claim(key) is None
    markers.update(key, run_dir=str(run_dir), pid=2 ** 22 + 12345, host=os.uname().nodename)  # a dead process
    outcome = handle(message, services)
    assert outcome.action == "complete"
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed" and "stopped before it finished" in task_log(devops_server)
    assert markers.read(key).status == "finished"
    # And once more: nothing new.
    assert handle(message, services).action == "complete"
    assert len(devops_server.task_completed_events()) == 1


def test_a_claim_whose_process_died_before_running_anything_is_taken_over(
        tmp_path: Path, devops_server: DevOpsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _message(tmp_path, devops_server)
    message, services, markers, key = d.message, d.services, d.markers, d.key
    assert markers.claim(key) is None
    markers.update(key, pid=2 ** 22 + 12345)  # died during the fetch: no run folder recorded
    from orchestrator.trigger import localrun

    ran: list[str] = []

    def run_without_kernels(plan: Any, *args: Any) -> tuple[str, Path]:
        ran.append(plan.steps[0].notebook)
        return "passed", make_run_folder(tmp_path / "run", [], status="passed")

    monkeypatch.setattr(localrun, "_run", run_without_kernels)
    outcome = handle(message, services)
    assert outcome.action == "complete" and ran == ["a.ipynb"]
    [event] = devops_server.task_completed_events()
    assert event["result"] == "succeeded"
