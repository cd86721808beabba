"""docs/architecture.md#secrets-policy: the job token appears nowhere but in the Authorization header - not in the run folder, not in a
log line (the SDK's debug logs included), not in any request's path, query, other headers or body."""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.live import CancellationWatcher, LiveReporter
from orchestrator.devops.publish import report_to_devops
from tests.conftest_devops import BODY, FAST, make_run_folder
from steps.step_result import StepResult
from tests.devops_server import DevOpsServer, allow_loopback, isolate_sdk_caches


def _forms(token: str) -> list[str]:
    """The token as itself and as it would look encoded somewhere it should not be."""
    return [token, quote(token, safe=""), base64.b64encode(token.encode()).decode(),
            base64.b64encode(f":{token}".encode()).decode()]


def test_the_token_appears_nowhere_but_the_authorization_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    token = f"SECRET-{uuid.uuid4().hex}-TOKEN"
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and urllib3's debug lines included
    run_dir = make_run_folder(tmp_path / "run")
    with DevOpsServer(token=token) as server:
        # Faults on the way, so retry and error paths log too; a message file as the CLI would read it.
        server.fail("results.add", 500)
        server.fail("feed", 429, retry_after="0.01")
        server.fail("attachments.run", 400, body="refused")
        message = tmp_path / "message.json"
        message.write_text(f'{{"message_id": "m", "body": {BODY!r}, "application_properties": '
                           f'{{"PlanUrl": "{server.url}", "ProjectId": "{server.project_id}", "HubName": "build", '
                           f'"PlanId": "{server.plan_id}", "JobId": "{server.job_id}", "TimelineId": '
                           f'"{server.timeline_id}", "TaskInstanceId": "{server.task_id}", "AuthToken": "{token}"}}}}'
                           .replace("'", '"'))
        context = DevOpsContext.from_message_file(message)
        logging.getLogger("orchestrator.devops").info("context=%r", context)
        watcher = CancellationWatcher(context, lambda reason: None, interval_s=0.01, policy=FAST).start()
        live = LiveReporter(context, interval_s=0.01, policy=FAST)
        live.run_started("run-1", 1, str(run_dir))
        live.step_finished(StepResult.from_json({"step": "a", "status": "failed", "duration_s": 1.0}))
        live.run_finished("failed", {"failed": 1}, 1.0)
        outcome = report_to_devops(run_dir, context, policy=FAST)
        watcher.stop()
        # And a refused token's path: the error messages must not quote it either.
        stale = DevOpsContext.from_message_file(message)
        server.fail("*", 401, times=50)
        refused = report_to_devops(make_run_folder(tmp_path / "run2", run_id="other"), stale, policy=FAST)

    assert outcome.task_completed and server.calls("feed") and not refused.ok
    forms = _forms(token)
    leaks: list[str] = []
    message.unlink()  # the one file that holds the token by design: the input
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes().decode("utf-8", errors="replace")
            leaks += [f"file {path}" for form in forms if form in content]
    for record in server.requests:
        others = {k: v for k, v in record.headers.items() if k.lower() != "authorization"}
        where = f"{record.method} {record.path}"
        text = " ".join([record.path, repr(record.query), repr(others), record.body.decode("utf-8", "replace")])
        leaks += [f"request {where}" for form in forms if form in text]
    leaks += [f"log line {r.name}: {r.getMessage()[:80]}" for r in caplog.records for form in forms
              if form in r.getMessage()]
    leaks += [f"outcome problem {p}" for p in refused.all_problems for form in forms if form in p]
    assert caplog.records and len(server.requests) > 20
    assert leaks == []
