"""The callback host allow-list (orchestrator/devops/hosts.py): a job token goes only to https Azure DevOps
hosts and the origins of ORCHESTRATOR_DEVOPS_HOSTS, checked before any request carries it, for every command
that calls DevOps. A second local server plays the host an attacker chose: it must receive nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrator.devops.hosts import refusal
from orchestrator.devops.http import DevOpsHostError, DevOpsHttp
from orchestrator.devops.publish import report_to_devops
from orchestrator.trigger.handlers import handle
from tests.cli_helpers import orchestrator_env, run_cli
from tests.conftest_devops import FAST, make_run_folder, server_context
from tests.devops_server import AttackerServer, DevOpsServer
from tests.trigger_support import kick_off_body, make_services, raw, via_function

URL = "https://dev.azure.com/org/proj/_git/repo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def attacker() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server


@pytest.fixture
def strict_only(devops_server: DevOpsServer, monkeypatch: pytest.MonkeyPatch) -> DevOpsServer:
    """Only the strict server's own origin (with its port) is listed: the attacker, on another port, is not."""
    monkeypatch.setenv("ORCHESTRATOR_DEVOPS_HOSTS", devops_server.host)
    return devops_server


@pytest.mark.parametrize(("url", "setting", "allowed"), [
    ("https://dev.azure.com/org/", "", True),
    ("https://DEV.azure.com:443/org", "", True),
    ("https://myorg.visualstudio.com/", "", True),
    ("http://dev.azure.com/org/", "", False),                       # https only for the built-in hosts
    ("https://dev.azure.com.evil.example/org/", "", False),
    ("https://visualstudio.com/", "", False),                       # *.visualstudio.com: subdomains only
    ("https://tfs.example.com:8443/tfs/DefaultCollection", "https://tfs.example.com", True),  # no port: any port
    ("https://tfs.example.com/tfs", "https://tfs.example.com:8443", False),
    ("http://tfs.example.com/tfs", "https://tfs.example.com", False),
    ("http://127.0.0.1:5000/org/", "http://127.0.0.1", True),
    ("http://127.0.0.1:5000/org/", "http://127.0.0.1:5001", False),
    ("https://a.corp.example/", " https://*.corp.example , http://127.0.0.1", True),
    ("not a url", "", False),
])
def test_the_allowed_origins(url: str, setting: str, allowed: bool) -> None:
    assert (refusal(url, {"ORCHESTRATOR_DEVOPS_HOSTS": setting}) is None) is allowed


def test_a_malformed_setting_is_named() -> None:
    from orchestrator.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="ORCHESTRATOR_DEVOPS_HOSTS.*tfs.example.com/tfs"):
        refusal("https://dev.azure.com/", {"ORCHESTRATOR_DEVOPS_HOSTS": "https://tfs.example.com/tfs"})


@pytest.mark.parametrize("front", ["handle", "function"])
def test_a_message_naming_an_unlisted_callback_host_is_refused_and_nothing_is_sent(
        front: str, strict_only: DevOpsServer, attacker: AttackerServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    properties = strict_only.message_properties(PlanUrl=attacker.url)
    data = json.dumps(kick_off_body(URL, COMMIT)).encode()
    if front == "handle":
        outcome = handle(raw(data, properties), make_services(tmp_path, allow_local=False))
    else:
        outcome = via_function(data, properties, tmp_path, monkeypatch)
    assert outcome.action == "dead_letter"
    assert "callback host is not allowed" in outcome.reason
    assert "127.0.0.1" in outcome.description and "ORCHESTRATOR_DEVOPS_HOSTS" in outcome.description
    assert strict_only.token not in outcome.description
    assert attacker.received == []
    assert strict_only.requests == []  # the job named is not closed either: the message cannot be trusted


def test_every_request_is_checked_as_it_is_sent_so_a_server_cannot_redirect_the_token(
        strict_only: DevOpsServer, attacker: AttackerServer, tmp_path: Path) -> None:
    # The SDK asks the server where the test API lives (ResourceAreas) and goes there with the token.
    strict_only.test_area_url = attacker.url
    outcome = report_to_devops(make_run_folder(tmp_path / "run"), server_context(strict_only), policy=FAST)
    assert attacker.received == []
    assert any("not an allowed Azure DevOps origin" in p for p in outcome.all_problems), outcome.all_problems
    # The raw calls go through the same guard.
    http = DevOpsHttp(strict_only.token, FAST)
    with pytest.raises(DevOpsHostError, match="not sent"):
        http.request("GET", attacker.url + "_apis/anything")
    http.close()
    assert attacker.received == []


@pytest.mark.parametrize("command", ["report", "run"])
def test_report_and_run_with_devops_refuse_an_unlisted_collection_before_any_request(
        command: str, attacker: AttackerServer, tmp_path: Path) -> None:
    env = orchestrator_env(**{"SYSTEM_ACCESSTOKEN": "tok-should-go-nowhere", "SYSTEM_COLLECTIONURI": attacker.url,
           "SYSTEM_TEAMPROJECTID": "proj", "BUILD_BUILDID": "7"})
    env.pop("ORCHESTRATOR_DEVOPS_HOSTS", None)
    target = make_run_folder(tmp_path / "run") if command == "report" else tmp_path / "no-plan-needed"
    result = run_cli(command, target, "--devops", env=env)
    assert result.returncode == 2, result.stderr
    assert "SYSTEM_COLLECTIONURI" in result.stderr and "not an allowed Azure DevOps origin" in result.stderr
    assert "Traceback" not in result.stderr and "tok-should-go-nowhere" not in result.stderr + result.stdout
    assert attacker.received == []
