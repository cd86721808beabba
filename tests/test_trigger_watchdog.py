"""wrap_up, the watchdog: each branch with a controllable clock, the fake MLClient and the strict DevOps
server. A kick_off is handled first (Azure ML path), then its scheduled checks are delivered when the clock
says they are due, as the queue would."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.trigger.handlers import handle
from orchestrator.trigger.intake import RawMessage
from tests.devops_server import DevOpsServer
from tests.trigger_support import INTERVAL, Watched, task_log

pytest.importorskip("azure.ai.ml")


@pytest.fixture
def watched(tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any) -> Watched:
    return Watched(tmp_path, devops_server, fake_ml)


def test_running_pipeline_and_open_task_schedule_the_next_check(watched: Watched) -> None:
    watched.status("Running")
    outcome = watched.next_check()
    assert outcome.action == "complete" and outcome.rescheduled_at == watched.clock.now + timedelta(seconds=INTERVAL)
    body = watched.last_scheduled()
    assert body["check"] == 2 and "azureml_job" not in body and not body["closing"]
    assert "AuthToken" not in watched.scheduler.scheduled[-1][0].properties
    assert watched.ml.jobs.cancelled == [] and watched.server.task_completed_events() == []
    assert watched.secrets.deleted == []  # the job is open: its token stays for the report node
    # And again: the chain goes on while both are open.
    assert watched.next_check().action == "complete" and watched.last_scheduled()["check"] == 3


def test_a_cancelled_devops_job_cancels_the_pipeline(watched: Watched) -> None:
    watched.status("Running")
    watched.server.cancel_job()
    outcome = watched.next_check()
    assert outcome.action == "complete" and "cancelled" in outcome.detail
    assert watched.ml.jobs.cancelled == [watched.name]
    assert watched.server.task_completed_events() == []  # DevOps closed it; we send nothing
    assert len(watched.scheduler.scheduled) == 1  # no further check
    # The chain ends: the job's token leaves Key Vault now, not when its expiry label says.
    assert watched.secrets.deleted == [watched.secret] and watched.secret not in watched.secrets.values


def test_a_task_closed_by_the_report_node_while_the_pipeline_finalizes_gets_one_more_check(watched: Watched) -> None:
    watched.status("Finalizing")
    watched.server.task_record().update(state="completed", result="succeeded")
    first = watched.next_check()
    assert first.action == "complete" and watched.last_scheduled()["closing"] is True
    assert watched.ml.jobs.cancelled == []
    watched.status("Completed")  # it ended in the meantime: nothing to do
    second = watched.next_check()
    assert second.action == "complete" and watched.ml.jobs.cancelled == []
    assert len(watched.scheduler.scheduled) == 2


def test_a_task_closed_but_a_pipeline_still_running_at_the_next_check_is_cancelled(watched: Watched) -> None:
    watched.status("Running")
    watched.server.task_record().update(state="completed", result="failed")  # e.g. timed out in DevOps
    watched.next_check()
    assert watched.ml.jobs.cancelled == []
    watched.next_check()
    assert watched.ml.jobs.cancelled == [watched.name]


def _result(root: Path, step: str, notebook: str, status: str) -> Path:
    folder = root / step
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "schema": 1, "step": step, "notebook": notebook, "status": status, "duration_s": 1.0, "attempts": 1,
        "started_at": "2026-11-26T10:00:00Z", "finished_at": "2026-11-26T10:00:01Z",
        "output_notebook": Path(notebook).name}))
    (folder / Path(notebook).name).write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4,
                                                          "nbformat_minor": 5}))
    return folder


def test_a_finished_pipeline_whose_task_is_open_is_reported_from_its_outputs_and_closed_once(watched: Watched) -> None:
    outputs = watched.tmp / "outputs"
    watched.ml.jobs.finish(watched.name, status="Failed", running_polls=0, steps={
        "nb_a": ("Completed", _result(outputs, "nb_a", "nb/a.ipynb", "passed")),
        "nb_b": ("Failed", _result(outputs, "nb_b", "nb/b.ipynb", "failed"))})
    outcome = watched.next_check()
    assert outcome.action == "complete" and "reported and closed" in outcome.detail
    [event] = watched.server.task_completed_events()
    assert event["result"] == "failed"
    [run] = watched.server.runs.values()
    assert sorted(r["outcome"] for r in run["results"]) == ["Failed", "Passed"]
    assert "watchdog" in task_log(watched.server)
    assert watched.secrets.deleted == [watched.secret]
    # Idempotent: the same check delivered again (a redelivery) sends nothing more.
    last = watched.scheduler.scheduled[-1][0]
    again = RawMessage(message_id="again", body=last.body_bytes, properties=last.properties)
    assert handle(again, watched.services).action == "complete"
    assert len(watched.server.task_completed_events()) == 1


def test_a_pipeline_never_submitted_is_waited_for_then_its_task_closed(
        tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any) -> None:
    watched = Watched(tmp_path, devops_server, fake_ml, submit_grace_s=1000.0)
    del fake_ml.jobs.records[watched.name]  # as if the kick-off crashed between scheduling and submitting
    first = watched.next_check(after=INTERVAL)
    assert first.action == "complete" and "not found yet" in first.detail
    assert devops_server.task_completed_events() == []
    second = watched.next_check(after=INTERVAL)
    assert second.action == "complete" and "never submitted" in second.detail
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed" and "never submitted" in task_log(devops_server)


def test_a_pipeline_running_past_the_watchdog_limit_is_cancelled_and_its_task_closed(
        tmp_path: Path, devops_server: DevOpsServer, fake_ml: Any) -> None:
    watched = Watched(tmp_path, devops_server, fake_ml, watchdog_max_age_s=1000.0)
    watched.status("Running")
    assert watched.next_check(after=INTERVAL).rescheduled_at is not None
    outcome = watched.next_check(after=INTERVAL)
    assert outcome.action == "complete" and watched.ml.jobs.cancelled == [watched.name]
    [event] = devops_server.task_completed_events()
    assert event["result"] == "failed" and "ORCHESTRATOR_WATCHDOG_MAX_AGE_S" in task_log(devops_server)


def test_devops_unreachable_during_a_check_schedules_the_next_one(watched: Watched) -> None:
    watched.status("Running")
    watched.server.fail("records.get", 503, times=100)
    outcome = watched.next_check()
    assert outcome.action == "complete" and "failed" in outcome.detail and watched.last_scheduled()["check"] == 2


def test_a_token_gone_from_the_vault_ends_the_watch(watched: Watched) -> None:
    watched.secrets.values.clear()
    outcome = watched.next_check()
    assert outcome.action == "complete" and "no longer in Key Vault" in outcome.detail
    assert len(watched.scheduler.scheduled) == 1


def test_key_vault_unreachable_during_a_check_schedules_the_next_one(watched: Watched) -> None:
    def unreachable(name: str) -> str | None:
        raise ConnectionError("vault unreachable")

    watched.secrets.get = unreachable  # type: ignore[method-assign]
    outcome = watched.next_check()
    assert outcome.action == "complete" and "vault unreachable" in outcome.detail
    assert watched.last_scheduled()["check"] == 2
