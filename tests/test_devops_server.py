"""The strict DevOps test server is itself strict: wrong auth, api-version or body are refused, every
request is recorded, and faults come out as asked. (The product's tests are only as good as this.)"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
import requests

from tests.devops_server import DevOpsServer


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f":{token}".encode()).decode()}


def _runs_url(server: DevOpsServer) -> str:
    return f"{server.url}{server.project_id}/_apis/test/runs"


def _events_url(server: DevOpsServer) -> str:
    return (f"{server.url}{server.project_id}/_apis/distributedtask/hubs/{server.plan.hub}/plans/"
            f"{server.plan_id}/events")


def test_wrong_or_missing_credentials_get_401(devops_server: DevOpsServer) -> None:
    url = _runs_url(devops_server)
    body: dict[str, Any] = {"name": "r", "automated": True}
    assert requests.post(url, json=body, params={"api-version": "7.1"}, timeout=5).status_code == 401
    assert requests.post(url, json=body, params={"api-version": "7.1"}, headers=_auth("nope"), timeout=5).status_code == 401
    bearer = {"Authorization": f"Bearer {devops_server.token}"}
    assert requests.post(url, json=body, params={"api-version": "7.1"}, headers=bearer, timeout=5).status_code == 200


@pytest.mark.parametrize("version", [None, "6.0", "7.1-preview.9", "banana"])
def test_missing_or_undocumented_api_version_gets_400(devops_server: DevOpsServer, version: str | None) -> None:
    params = {"api-version": version} if version else {}
    answer = requests.post(_runs_url(devops_server), json={"name": "r"}, params=params,
                           headers=_auth(devops_server.token), timeout=5)
    assert answer.status_code == 400
    assert "api-version" in answer.json()["message"]


def test_api_version_is_also_read_from_the_accept_header_as_the_sdk_sends_it(devops_server: DevOpsServer) -> None:
    headers = {**_auth(devops_server.token), "Accept": "application/json;api-version=7.1-preview.3"}
    assert requests.post(_runs_url(devops_server), json={"name": "r"}, headers=headers, timeout=5).status_code == 200
    headers["Accept"] = "application/json;api-version=7.1-preview.3"
    clash = requests.post(_runs_url(devops_server), json={"name": "r"}, params={"api-version": "7.1"},
                          headers=headers, timeout=5)
    assert clash.status_code == 400


@pytest.mark.parametrize("body, says", [
    ({"name": "r", "is_automated": True}, "unknown field"),          # the wrong name docs/devops-protocol.md#pitfalls warns about
    ({"name": "r", "state": "Completed"}, "cannot be created"),      # create accepts NotStarted/InProgress/Waiting
    ({"name": "r", "build": {"id": "1"}, "pipelineReference": {"pipelineId": 2}}, "pipelineId"),
    ({"automated": True}, "name"),
    ({"name": "r", "automated": "yes"}, "automated"),
])
def test_malformed_run_bodies_get_400_saying_what(devops_server: DevOpsServer, body: dict[str, Any], says: str) -> None:
    answer = requests.post(_runs_url(devops_server), json=body, params={"api-version": "7.1"},
                           headers=_auth(devops_server.token), timeout=5)
    assert answer.status_code == 400
    assert says in answer.json()["message"]


def test_not_json_and_event_mistakes_get_400(devops_server: DevOpsServer) -> None:
    headers = _auth(devops_server.token)
    url, params = _events_url(devops_server), {"api-version": "2.0-preview.1"}
    junk = requests.post(url, data=b"{not json", params=params, headers={**headers, "Content-Type": "application/json"},
                         timeout=5)
    assert junk.status_code == 400
    bad_result: dict[str, Any] = {"name": "TaskCompleted", "taskId": devops_server.task_id, "jobId": devops_server.job_id,
                  "result": "great"}
    assert requests.post(url, json=bad_result, params=params, headers=headers, timeout=5).status_code == 400
    wrong_task = {**bad_result, "result": "succeeded", "taskId": devops_server.job_id}
    assert requests.post(url, json=wrong_task, params=params, headers=headers, timeout=5).status_code == 404
    assert devops_server.events == []


def test_feed_limits_are_enforced(devops_server: DevOpsServer) -> None:
    s = devops_server
    url = (f"{s.url}{s.project_id}/_apis/distributedtask/hubs/{s.plan.hub}/plans/{s.plan_id}/timelines/"
           f"{s.timeline_id}/records/{s.job_id}/feed")
    headers, params = _auth(s.token), {"api-version": "4.1"}
    ok: dict[str, Any] = {"value": ["a", "b"], "count": 2}
    assert requests.post(url, json=ok, params=params, headers=headers, timeout=5).status_code == 200
    too_many: dict[str, Any] = {"value": ["x"] * 101, "count": 101}
    assert requests.post(url, json=too_many, params=params, headers=headers, timeout=5).status_code == 400
    too_long: dict[str, Any] = {"value": ["x" * 1025], "count": 1}
    assert requests.post(url, json=too_long, params=params, headers=headers, timeout=5).status_code == 400
    task_record = url.replace(f"/records/{s.job_id}/", f"/records/{s.task_id}/")
    assert requests.post(task_record, json=ok, params=params, headers=headers, timeout=5).status_code == 404


def test_every_request_is_recorded_and_faults_come_out_as_asked(devops_server: DevOpsServer) -> None:
    s = devops_server
    s.fail("runs.create", 429, retry_after=7)
    s.fail("runs.create", 203)
    headers, params = _auth(s.token), {"api-version": "7.1"}
    first = requests.post(_runs_url(s), json={"name": "r"}, params=params, headers=headers, timeout=5)
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    second = requests.post(_runs_url(s), json={"name": "r"}, params=params, headers=headers, timeout=5)
    assert second.status_code == 203 and second.headers["Content-Type"].startswith("text/html")
    third = requests.post(_runs_url(s), json={"name": "r"}, params=params, headers=headers, timeout=5)
    assert third.status_code == 200
    recorded = s.attempts("runs.create")
    assert [r.fault for r in recorded] == ["429", "203", None]
    assert all(r.json == {"name": "r"} and r.query == {"api-version": "7.1"} for r in recorded)
    assert len(s.runs) == 1


def test_a_hang_answers_nothing_until_the_client_gives_up(devops_server: DevOpsServer) -> None:
    s = devops_server
    s.hang("runs.create")
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.post(_runs_url(s), json={"name": "r"}, params={"api-version": "7.1"}, headers=_auth(s.token),
                      timeout=(2, 0.3))
    assert time.monotonic() - started < 2
    assert s.attempts("runs.create")[0].fault == "hang" and not s.runs
