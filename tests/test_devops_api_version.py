"""Every SDK call carries its api-version in the query string too (the REST reference's form), with the
same value the SDK negotiated and put in the Accept header."""

from __future__ import annotations

from pathlib import Path

from orchestrator.devops.publish import publish_run
from tests.conftest_devops import FAST, server_context
from tests.devops_server import DevOpsServer


def test_sdk_requests_carry_the_api_version_in_query_and_accept_header(
        run_dir: Path, devops_server: DevOpsServer) -> None:
    outcome = publish_run(run_dir, server_context(devops_server), policy=FAST)
    assert outcome.ok, outcome.problems
    test_calls = [r for r in devops_server.requests if r.route and r.route.startswith(("runs.", "results.", "attachments."))]
    assert test_calls
    for call in test_calls:
        accept = call.header("Accept") or ""
        assert "api-version" in call.query, (call.method, call.path)
        assert accept.endswith(f"api-version={call.query['api-version']}"), (accept, call.query)
