"""Closing the waiting server job: the persisted log, then exactly one TaskCompleted with the right result,
after the test results; idempotent; faults survived; a refused token never raised."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.publish import close_server_task, complete_server_job, report_to_devops, task_result_for
from tests.conftest_devops import FAST, HANG_POLICY, make_run_folder, server_context, step
from tests.devops_server import DevOpsServer


def _completed(server: DevOpsServer) -> list[dict[str, Any]]:
    return server.task_completed_events()


def test_the_report_ends_with_one_task_completed_after_results_and_log(devops_server: DevOpsServer,
                                                                     run_dir: Path) -> None:
    s = devops_server
    outcome = report_to_devops(run_dir, server_context(s), policy=FAST)

    assert outcome.ok and outcome.task_completed and outcome.task_result == "failed", outcome
    assert _completed(s) == [{"name": "TaskCompleted", "taskId": s.task_id, "jobId": s.job_id, "result": "failed"}]
    assert s.task_record()["state"] == "completed" and s.task_record()["result"] == "failed"
    routes = [r.route for r in s.requests if r.status and r.status < 300]
    last_test_call = max(i for i, r in enumerate(routes) if r and (r.startswith("runs") or r.startswith("att")
                                                                   or r.startswith("results")))
    assert last_test_call < routes.index("logs.create") < routes.index("logs.append") \
        < routes.index("records.update") < routes.index("events")
    assert routes[-1] == "events"


def test_the_persisted_log_is_attached_to_the_task_record(devops_server: DevOpsServer, run_dir: Path) -> None:
    s = devops_server
    outcome = report_to_devops(run_dir, server_context(s), policy=FAST)
    assert outcome.log_id is not None
    created = s.calls("logs.create")[0].json
    assert created == {"path": f"logs\\{s.task_id}"}
    assert s.calls("logs.append")[0].header("Content-Type") == "application/octet-stream"
    patch = s.calls("records.update")[0].json
    assert patch["count"] == 1 and patch["value"][0]["id"] == s.task_id
    assert patch["value"][0]["log"]["id"] == outcome.log_id
    assert s.task_record()["log"]["id"] == outcome.log_id
    text = s.log_text(outcome.log_id)
    assert "FAILED    examples/01_train.ipynb" in text and "ValueError: bad value (cell 3)" in text
    assert "Test run 1 (Completed)" in text and "Task result: failed" in text


@pytest.mark.parametrize("status, result", [("passed", "succeeded"), ("failed", "failed"),
                                            ("interrupted", "canceled"), ("running", "failed")])
def test_the_task_result_follows_the_run(devops_server: DevOpsServer, tmp_path: Path, status: str, result: str) -> None:
    steps = [step("a.ipynb", "passed")] if status == "passed" else None
    folder = make_run_folder(tmp_path / "run", steps, status=status)
    report_to_devops(folder, server_context(devops_server), policy=FAST)
    assert [e["result"] for e in _completed(devops_server)] == [result]
    assert task_result_for(status) == result


def test_an_explicit_result_wins(devops_server: DevOpsServer, run_dir: Path) -> None:
    report_to_devops(run_dir, server_context(devops_server), policy=FAST, result="canceled")
    assert [e["result"] for e in _completed(devops_server)] == ["canceled"]


def test_a_second_attempt_on_the_same_run_folder_sends_nothing(devops_server: DevOpsServer, run_dir: Path) -> None:
    context = server_context(devops_server)
    first = report_to_devops(run_dir, context, policy=FAST)
    count = len(devops_server.requests)
    second = report_to_devops(run_dir, context, policy=FAST)
    assert first.task_completed and not second.task_completed and second.already_completed
    assert len(devops_server.requests) == count  # no request at all: devops.json knew
    assert len(_completed(devops_server)) == 1 and len(devops_server.runs) == 1
    marker = json.loads((run_dir / "devops.json").read_text())
    assert list(marker["tasks"]) == [context.task.key if context.task else ""]


def test_a_task_already_completed_in_devops_is_left_alone(devops_server: DevOpsServer, tmp_path: Path) -> None:
    context = server_context(devops_server)
    report_to_devops(make_run_folder(tmp_path / "one"), context, policy=FAST)
    # Another report step (a rerun, a watchdog) with its own run folder: DevOps says the task is done.
    again = complete_server_job(make_run_folder(tmp_path / "two"), context, policy=FAST)
    assert not again.task_completed and "completed" in (again.already_completed or "")
    assert len(_completed(devops_server)) == 1 and len(devops_server.calls("logs.create")) == 1


def test_a_cancelled_job_gets_no_task_completed(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.cancel_job()
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=FAST)
    assert _completed(devops_server) == [] and "result=canceled" in (outcome.already_completed or "")
    assert outcome.test_run is not None and outcome.test_run.ok  # the results are still worth having


def test_task_completed_survives_429_and_500(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.fail("events", 429, retry_after="0.05")
    devops_server.fail("events", 500)
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=FAST)
    assert outcome.task_completed
    assert [r.fault for r in devops_server.attempts("events")] == ["429", "500", None]
    assert len(_completed(devops_server)) == 1


def test_a_task_completed_whose_answer_was_lost_is_not_sent_twice(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.hang("events", after_processing=True)
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=HANG_POLICY)
    assert len(_completed(devops_server)) == 1
    assert len(devops_server.attempts("events")) == 1  # the retry looked at the record first
    assert not outcome.task_completed and outcome.already_completed and not outcome.problems


def test_a_task_completed_that_hung_unprocessed_is_sent_again(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.hang("events")
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=HANG_POLICY)
    assert outcome.task_completed and len(_completed(devops_server)) == 1
    assert [r.fault for r in devops_server.attempts("events")] == ["hang", None]


@pytest.mark.parametrize("status", [401, 403, 203])
def test_a_refused_token_on_the_callback_is_logged_not_raised_not_retried(devops_server: DevOpsServer, run_dir: Path,
                                                                          status: int, caplog: pytest.LogCaptureFixture) -> None:
    devops_server.fail("events", status, times=10)
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=FAST)
    assert not outcome.task_completed and not outcome.ok
    assert any("token expired or the job is gone" in p for p in outcome.problems)
    assert len(devops_server.attempts("events")) == 1
    assert "token expired or the job is gone" in caplog.text


def test_a_stale_token_everywhere_ends_quickly_with_problems(devops_server: DevOpsServer, run_dir: Path) -> None:
    context = server_context(devops_server, AuthToken="expired")
    started = time.monotonic()
    outcome = report_to_devops(run_dir, context, policy=FAST)
    assert time.monotonic() - started < 2 and not outcome.ok
    assert outcome.test_run is not None and outcome.test_run.auth_refused
    assert len(devops_server.requests) == 2  # OPTIONS (test API) and the records GET (callback): both 401


def test_the_log_upload_failing_does_not_keep_the_job_open(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.fail("logs.create", 500, times=FAST.attempts)
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=FAST)
    assert outcome.task_completed and outcome.log_id is None
    assert any("task log not uploaded" in p for p in outcome.problems)


def test_a_job_can_be_closed_without_a_run_for_a_message_that_made_no_sense(devops_server: DevOpsServer) -> None:
    outcome = close_server_task(server_context(devops_server), "failed",
                                ["message refused: repository URL file:///etc is not allowed"], policy=FAST)
    assert outcome.task_completed and _completed(devops_server)[0]["result"] == "failed"
    assert "file:///etc is not allowed" in devops_server.log_text(outcome.log_id or 0)


def test_an_agent_job_context_publishes_results_and_closes_nothing(devops_server: DevOpsServer, run_dir: Path) -> None:
    context = server_context(devops_server).without_task()
    outcome = report_to_devops(run_dir, context, policy=FAST)
    assert outcome.ok and outcome.test_run is not None and outcome.task_result is None
    assert not any(r.route and (r.route.startswith("events") or r.route.startswith("logs") or
                                r.route.startswith("records")) for r in devops_server.requests)


def test_a_whole_report_through_faults_on_every_kind_of_call(devops_server: DevOpsServer, run_dir: Path) -> None:
    s = devops_server
    for route, status in (("resource_areas", 500), ("runs.create", 429), ("results.add", 500),
                          ("attachments.result", 429), ("attachments.run", 503), ("runs.update", 500),
                          ("records.get", 500), ("logs.create", 429), ("logs.append", 500),
                          ("records.update", 502), ("events", 500)):
        s.fail(route, status, retry_after="0.01" if status == 429 else None)
    outcome = report_to_devops(run_dir, server_context(s), policy=FAST)

    assert outcome.ok and outcome.task_completed, outcome.all_problems
    (run,) = s.runs.values()
    assert run["state"] == "Completed" and run["build"] == {"id": "1234"} and len(run["results"]) == 6
    assert sum(len(r["attachments"]) for r in run["results"]) == 10 and len(run["attachments"]) == 2
    assert s.task_record()["log"]["id"] == outcome.log_id
    assert [e["result"] for e in _completed(s)] == ["failed"]


def test_without_the_sdk_the_waiting_job_is_still_closed(devops_server: DevOpsServer, run_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestrator.devops.testrun as testrun
    from orchestrator.errors import MissingExtraError

    def missing() -> None:
        raise MissingExtraError("azure-devops", "devops")

    monkeypatch.setattr(testrun, "require_sdk", missing)
    outcome = report_to_devops(run_dir, server_context(devops_server), policy=FAST)
    assert outcome.task_completed and not outcome.ok
    assert "pip install 'notebook-orchestrator[devops]'" in outcome.problems[0]
    assert "pip install" in devops_server.log_text(outcome.log_id or 0)
    with pytest.raises(MissingExtraError):
        report_to_devops(run_dir, server_context(devops_server).without_task(), policy=FAST)
