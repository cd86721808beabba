"""Publishing a run folder as a test run: the real azure-devops SDK, over HTTP, against the strict server."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.http import RetryPolicy
from orchestrator.devops.publish import publish_run
from orchestrator.devops.fields import attachment_name
from orchestrator.devops.testrun import PublishOptions, publish_test_run
from tests.conftest_devops import (
    FAST,
    HANG_POLICY,
    LONG_TRACEBACK,
    make_run_folder,
    server_context,
    step,
)
from tests.devops_server import DevOpsServer


def _only_run(server: DevOpsServer) -> dict[str, Any]:
    assert len(server.runs) == 1, server.runs
    return next(iter(server.runs.values()))


def _by_title(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results by notebook path: the folder is the storage (dots for slashes), the title the file name."""
    return {f"{r['automatedTestStorage'].replace('.', '/')}/{r['testCaseTitle']}": r for r in run["results"]}


def test_a_run_becomes_one_completed_test_run_linked_to_the_build(devops_server: DevOpsServer, run_dir: Path) -> None:
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST)

    assert outcome.ok and outcome.state == "Completed" and outcome.results == 6, outcome
    run = _only_run(devops_server)
    created = run["created"]
    assert created["automated"] is True and created["build"] == {"id": "1234"} and created["state"] == "InProgress"
    assert "20261126.3" in created["name"] and created["startDate"].startswith("2026-11-26T10:00:00")
    assert run["state"] == "Completed" and run["updates"][-1]["completedDate"].startswith("2026-11-26T10:01:00")
    # The route discovery the SDK needs, then create -> results -> attachments -> complete, in that order.
    routes = [r.route for r in devops_server.requests]
    assert routes[:2] == ["options", "resource_areas"]
    assert routes.index("runs.create") < routes.index("results.add") < routes.index("attachments.result")
    assert max(i for i, r in enumerate(routes) if r and r.startswith("attachments")) < routes.index("runs.update")


def test_each_notebook_is_one_result_with_the_mapped_outcome_and_its_error(devops_server: DevOpsServer,
                                                                            run_dir: Path) -> None:
    publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    results = _by_title(_only_run(devops_server))

    assert {title: r["outcome"] for title, r in results.items()} == {
        "examples/00_prepare.ipynb": "Passed", "examples/01_train.ipynb": "Failed",
        "examples/models/02_slow.ipynb": "Timeout", "examples/03_crash.ipynb": "Aborted",
        "examples/04_broken.ipynb": "Error", "examples/scratch/05_wip.ipynb": "NotExecuted"}
    failed = results["examples/01_train.ipynb"]
    # Named as PublishTestResults@2 names junit.xml's testcase, so both publishing paths share one history.
    assert failed["automatedTestName"] == failed["testCaseTitle"] == "01_train.ipynb"
    assert failed["automatedTestStorage"] == "examples" and failed["automatedTestType"] == "JUnit"
    assert failed["errorMessage"] == "ValueError: bad value (cell 3)"
    assert len(failed["stackTrace"]) <= 1000 and failed["stackTrace"].endswith("ValueError: bad value")
    assert "\x1b" not in failed["stackTrace"] and len(LONG_TRACEBACK) > 1000
    assert failed["durationInMs"] == 12500 and failed["state"] == "Completed" and failed["computerName"]
    assert failed["startedDate"].startswith("2026-11-26T10:00:00")
    skipped = results["examples/scratch/05_wip.ipynb"]
    assert skipped["errorMessage"] == "skipped: work in progress" and "startedDate" not in skipped
    assert "rows=100" in results["examples/00_prepare.ipynb"]["comment"]


def test_executed_notebooks_and_their_html_are_attached_to_their_results(devops_server: DevOpsServer,
                                                                        run_dir: Path) -> None:
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    run = _only_run(devops_server)
    train = _by_title(run)["examples/01_train.ipynb"]

    names = sorted(a["fileName"] for a in train["attachments"])
    assert names == ["01_train.html", "01_train.ipynb"]
    notebook = next(a for a in train["attachments"] if a["fileName"].endswith(".ipynb"))
    assert notebook["content"] == (run_dir / "steps/examples_01_train/01_train.ipynb").read_bytes()
    assert notebook["attachmentType"] == "GeneralAttachment"
    assert sorted(a["fileName"] for a in run["attachments"]) == ["junit.xml", "report.html"]
    assert outcome.attachments == 12  # 5 executed notebooks x 2 + 2; the skipped one has none


def test_an_oversized_notebook_is_skipped_and_said_so(devops_server: DevOpsServer, tmp_path: Path) -> None:
    folder = make_run_folder(tmp_path / "run", [step("big.ipynb", "passed")], notebook_bytes=5000)
    outcome = publish_test_run(folder, server_context(devops_server), policy=FAST,
                               options=PublishOptions(max_attachment_bytes=2000))
    assert outcome.state == "Completed"
    assert len(outcome.skipped_attachments) == 1 and "steps/big/big.ipynb" in outcome.skipped_attachments[0]
    attached = [a["fileName"] for a in _only_run(devops_server)["results"][0]["attachments"]]
    assert attached == ["big.html"]


def test_attachment_names_are_sanitised_for_the_api(devops_server: DevOpsServer, tmp_path: Path) -> None:
    assert attachment_name("run: 1/2\\3.ipynb") == "run_ 1_2_3.ipynb"
    assert attachment_name("..") == "attachment"
    odd = step("odd:name.ipynb", "passed", step="odd_name", output_notebook="odd:name.ipynb")
    folder = make_run_folder(tmp_path / "run", [odd])
    outcome = publish_test_run(folder, server_context(devops_server), policy=FAST)
    assert outcome.ok, outcome
    names = sorted(a["fileName"] for a in _only_run(devops_server)["results"][0]["attachments"])
    assert names == ["odd_name.html", "odd_name.ipynb"]


def test_results_go_in_batches_of_at_most_1000(devops_server: DevOpsServer, tmp_path: Path) -> None:
    steps = [step(f"nb/{i:04d}.ipynb", "passed", output_notebook=None) for i in range(1001)]
    folder = make_run_folder(tmp_path / "run", steps, files=False)
    outcome = publish_test_run(folder, server_context(devops_server), policy=FAST)
    assert outcome.ok and outcome.results == 1001
    assert [len(call.json) for call in devops_server.calls("results.add")] == [1000, 1]


def test_an_agent_job_run_carries_the_pipeline_reference(devops_server: DevOpsServer, run_dir: Path) -> None:
    env = {"SYSTEM_ACCESSTOKEN": devops_server.token, "SYSTEM_COLLECTIONURI": devops_server.url,
           "SYSTEM_TEAMPROJECTID": devops_server.project_id, "BUILD_BUILDID": "77", "BUILD_BUILDNUMBER": "20261126.9",
           "SYSTEM_STAGENAME": "notebooks", "SYSTEM_STAGEATTEMPT": "1", "SYSTEM_PHASENAME": "run",
           "SYSTEM_PHASEATTEMPT": "2", "SYSTEM_JOBNAME": "run", "SYSTEM_JOBATTEMPT": "2", "AGENT_MACHINENAME": "agent-7"}
    context = DevOpsContext.from_environment(env)
    assert context.task is None
    assert publish_test_run(run_dir, context, policy=FAST).ok
    created = _only_run(devops_server)["created"]
    assert created["build"] == {"id": "77"}
    assert created["pipelineReference"] == {
        "pipelineId": 77, "stageReference": {"stageName": "notebooks", "attempt": 1},
        "phaseReference": {"phaseName": "run", "attempt": 2}, "jobReference": {"jobName": "run", "attempt": 2}}
    assert {r["computerName"] for r in _only_run(devops_server)["results"]} == {"agent-7"}


def test_429_with_retry_after_and_500s_are_retried_without_duplicates(devops_server: DevOpsServer,
                                                                      run_dir: Path) -> None:
    s = devops_server
    s.fail("options", 503)
    s.fail("runs.create", 500, times=2)
    s.fail("results.add", 429, retry_after="0.3")
    s.fail("attachments.result", 500)
    s.fail("runs.update", 502)
    started = time.monotonic()
    outcome = publish_test_run(run_dir, server_context(s), policy=FAST)

    assert outcome.ok, outcome
    assert len(s.runs) == 1 and _only_run(s)["state"] == "Completed"
    assert len(_only_run(s)["results"]) == 6
    # Exactly our retries: the SDK's own urllib3 retries (3 on GET/OPTIONS 5xx) are switched off.
    assert [r.fault for r in s.attempts("options")] == ["503", None]
    assert [r.fault for r in s.attempts("runs.create")] == ["500", "500", None]
    adds = s.attempts("results.add")
    assert [r.fault for r in adds] == ["429", None]
    assert time.monotonic() - started >= 0.3  # Retry-After honoured


def test_a_hang_times_out_and_is_retried(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.hang("runs.update")
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=HANG_POLICY)
    assert outcome.ok and _only_run(devops_server)["state"] == "Completed"
    assert [r.fault for r in devops_server.attempts("runs.update")] == ["hang", None]


def test_a_retry_after_beyond_the_time_budget_gives_up_at_once(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.fail("runs.create", 429, retry_after="3600")
    started = time.monotonic()
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    assert time.monotonic() - started < 2
    assert outcome.run_id is None and "3600 s" in outcome.problems[0]
    assert len(devops_server.attempts("runs.create")) == 1


@pytest.mark.parametrize("status", [401, 403, 203])
def test_a_refused_token_is_terminal_not_retried_and_not_raised(devops_server: DevOpsServer, run_dir: Path,
                                                               status: int) -> None:
    devops_server.fail("results.add", status, times=10)
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    assert outcome.auth_refused and not outcome.ok
    assert "token expired or the job is gone" in outcome.problems[0]
    assert len(devops_server.attempts("results.add")) == 1
    assert devops_server.attempts("attachments.result") == []
    # The run is still closed (one try), so it does not read as running forever.
    assert outcome.state == "Aborted" and len(devops_server.attempts("runs.update")) == 1


def test_a_refused_attachment_stops_the_uploads_but_the_run_is_completed(devops_server: DevOpsServer,
                                                                        run_dir: Path) -> None:
    devops_server.fail("attachments.result", 401)
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST,
                               options=PublishOptions(attachment_workers=1))
    assert outcome.auth_refused and outcome.attachments == 0 and outcome.results == 6
    assert len(devops_server.attempts("attachments.result")) == 1 and not devops_server.attempts("attachments.run")
    assert outcome.state == "Completed" and _only_run(devops_server)["state"] == "Completed"


def test_a_wrong_token_from_the_start_fails_fast(devops_server: DevOpsServer, run_dir: Path) -> None:
    context = server_context(devops_server, AuthToken="stale-token")
    started = time.monotonic()
    outcome = publish_test_run(run_dir, context, policy=RetryPolicy(backoff_s=5.0))
    assert outcome.auth_refused and time.monotonic() - started < 2
    assert len(devops_server.requests) == 1


def test_results_that_cannot_be_added_leave_the_run_aborted_not_in_progress(devops_server: DevOpsServer,
                                                                            run_dir: Path) -> None:
    devops_server.fail("results.add", 500, times=FAST.attempts)
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    assert outcome.state == "Aborted" and not outcome.ok
    run = _only_run(devops_server)
    assert run["state"] == "Aborted" and "add test results" in run["updates"][-1]["errorMessage"]


def test_a_refused_attachment_does_not_stop_the_others(devops_server: DevOpsServer, run_dir: Path) -> None:
    devops_server.fail("attachments.result", 400, body="file type not allowed")
    outcome = publish_test_run(run_dir, server_context(devops_server), policy=FAST,
                               options=PublishOptions(attachment_workers=1))
    assert outcome.state == "Completed" and outcome.attachments == 11
    assert "file type not allowed" in outcome.skipped_attachments[0]


def test_publishing_the_same_run_folder_twice_makes_one_test_run(devops_server: DevOpsServer, run_dir: Path) -> None:
    context = server_context(devops_server)
    first = publish_run(run_dir, context, policy=FAST)
    second = publish_run(run_dir, context, policy=FAST)
    assert first.run_id == second.run_id and len(devops_server.runs) == 1
    marker = json.loads((run_dir / "devops.json").read_text())
    assert [entry["id"] for entry in marker["test_runs"].values()] == [first.run_id]
    publish_run(run_dir, context, policy=FAST, force=True)
    assert len(devops_server.runs) == 2


def test_requests_use_basic_auth_with_an_empty_user_name(devops_server: DevOpsServer, run_dir: Path) -> None:
    publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    expected = "Basic " + base64.b64encode(f":{devops_server.token}".encode()).decode()
    assert {r.header("Authorization") for r in devops_server.requests} == {expected}


def agent_junit_results(path: Path) -> list[dict[str, str]]:
    """What PublishTestResults@2 sends for junit.xml: the agent's JUnit reader (azure-pipelines-agent,
    src/Agent.Worker/TestResults/Legacy/JunitResultReader.cs) sets TestCaseTitle and AutomatedTestName to the
    testcase's `name`, AutomatedTestStorage to its `classname`, AutomatedTestType to "JUnit"."""
    import xml.etree.ElementTree as ET

    return [{"testCaseTitle": case.get("name", ""), "automatedTestName": case.get("name", ""),
             "automatedTestStorage": case.get("classname", ""), "automatedTestType": "JUnit"}
            for case in ET.parse(path).getroot().iter("testcase")]


def test_published_results_and_junit_xml_land_on_the_same_test_history(devops_server: DevOpsServer,
                                                                       run_dir: Path) -> None:
    from orchestrator.report.junit import write_junit
    from orchestrator.results import load_results

    write_junit(load_results(run_dir), run_dir / "junit.xml")  # the real junit.xml of this run folder
    publish_test_run(run_dir, server_context(devops_server), policy=FAST)
    keys = ("testCaseTitle", "automatedTestName", "automatedTestStorage", "automatedTestType")
    ours = sorted(tuple(r[k] for k in keys) for r in _only_run(devops_server)["results"])
    theirs = sorted(tuple(r[k] for k in keys) for r in agent_junit_results(run_dir / "junit.xml"))
    assert ours == theirs and len(ours) == 6


def test_a_server_job_message_naming_its_stage_and_job_links_the_test_run_to_them(devops_server: DevOpsServer,
                                                                                 run_dir: Path) -> None:
    from orchestrator.trigger.messages import KickOff, parse_body

    from tests.conftest_devops import BODY

    body = {**BODY, "pipeline": {
        "stage_name": "notebooks_server", "stage_attempt": "2", "job_name": "kick_off", "job_attempt": 1}}
    message = parse_body(body)
    assert isinstance(message, KickOff)
    context = server_context(devops_server, message.body_for_context())
    publish_test_run(run_dir, context, policy=FAST)
    reference = _only_run(devops_server)["created"]["pipelineReference"]
    assert reference["pipelineId"] == 1234
    assert reference["stageReference"] == {"stageName": "notebooks_server", "attempt": 2}
    assert reference["jobReference"] == {"jobName": "kick_off", "attempt": 1}
    # Without them (the default message), no reference: a server job has no agent variables to take it from.
    assert server_context(devops_server).pipeline is None
