"""`orchestrator handle MESSAGE.json --backend local --allow-local-repos`, end to end: a local bare git
repository with two tiny notebooks and an orchestrator.yml, real kernels, the strict DevOps test server
closing the job. Also: --allow-local-repos is required for a local repository, a duplicate message starts
no second run, and a recognisable job token appears in no log line, no output, no file."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.trigger.commands import handle_command
from tests.builders import make_notebook
from tests.devops_server import DevOpsServer, allow_loopback, isolate_sdk_caches
from tests.trigger_support import kick_off_body, notebook_repo, task_log, wrapped

PLAN = "version: 1\nexperiment: handle-demo\ndefaults:\n  timeout: 120\nnotebooks:\n  - glob: '*.ipynb'\n"
# The kernel must never see the job token (docs/architecture.md#secrets-policy): the passing notebook checks its own environment.
NO_TOKEN_IN_ENV = ("import os\nleaked = [k for k, v in os.environ.items() if 'RECOGNISABLE' in v]\n"
                   "assert not leaked, leaked\nprint('fine')")


def message_file(path: Path, server: DevOpsServer, url: str, commit: str) -> Path:
    path.write_text(json.dumps({"message_id": path.stem, "body": kick_off_body(url, commit),
                                "application_properties": server.message_properties()}), encoding="utf-8")
    return path


def handle(*args: Any) -> Any:
    return CliRunner().invoke(handle_command, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_handle_runs_the_notebooks_here_and_closes_the_devops_job_with_their_outcome(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    monkeypatch.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ORCHESTRATOR_WORK_DIR", str(tmp_path / "work"))
    caplog.set_level(logging.DEBUG)
    repo, passing = notebook_repo(tmp_path / "repo", {"01_ok.ipynb": NO_TOKEN_IN_ENV, "02_more.ipynb": "x = 2"}, PLAN)
    make_notebook(repo.work / "02_more.ipynb", "raise ValueError('broken on purpose')")
    failing = repo.commit("break a notebook")
    token = f"tok-RECOGNISABLE-{uuid.uuid4().hex}"
    outputs: list[str] = []
    with DevOpsServer(token=token) as green, DevOpsServer(token=token) as red:
        # All notebooks pass: exit 0, the server job closed once as succeeded, results published.
        ok_message = message_file(tmp_path / "ok.json", green, str(repo.bare), passing)
        done = handle(ok_message, "--allow-local-repos", "--out", tmp_path / "run-ok", "--jobs", "2")
        outputs.append(done.output)
        assert done.exit_code == 0, done.output
        [event] = green.task_completed_events()
        assert event["result"] == "succeeded"
        [run] = green.runs.values()
        assert sorted(r["outcome"] for r in run["results"]) == ["Passed", "Passed"] and run["state"] == "Completed"
        assert green.calls("feed"), "no live feed lines while the notebooks ran"

        # One notebook fails: exit 1, closed once as failed, its error in the results.
        bad_message = message_file(tmp_path / "bad.json", red, str(repo.bare), failing)
        done = handle(bad_message, "--allow-local-repos", "--out", tmp_path / "run-bad", "--jobs", "2")
        outputs.append(done.output)
        assert done.exit_code == 1, done.output
        [event] = red.task_completed_events()
        assert event["result"] == "failed"
        [run] = red.runs.values()
        assert sorted(r["outcome"] for r in run["results"]) == ["Failed", "Passed"]
        assert "broken on purpose" in task_log(red)

        # The same message again (at-least-once delivery): no second run, no second TaskCompleted.
        done = handle(ok_message, "--allow-local-repos", "--out", tmp_path / "run-again")
        outputs.append(done.output)
        assert done.exit_code == 0 and "already handled" in done.output
        assert len(green.task_completed_events()) == 1 and not (tmp_path / "run-again").exists()

    # A token that reached a log line, the command's output or a file would be found here.
    assert not [r.getMessage() for r in caplog.records if token in r.getMessage()]
    assert not [o for o in outputs if token in o]
    leaked = [str(p) for p in tmp_path.rglob("*") if p.is_file() and token.encode() in p.read_bytes()
              and p.name not in ("ok.json", "bad.json")]  # the message files themselves hold it, as queued
    assert leaked == []


def test_a_local_repository_needs_allow_local_repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    monkeypatch.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "state"))
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"}, PLAN)
    with DevOpsServer() as server:
        done = handle(message_file(tmp_path / "m.json", server, str(repo.bare), commit), "--out", tmp_path / "run")
        assert done.exit_code == 2, done.output
        assert "refused" in done.output and "--allow-local-repos" in done.output
        [event] = server.task_completed_events()
        assert event["result"] == "failed" and "--allow-local-repos" in task_log(server)
    assert not (tmp_path / "run").exists()


def test_a_message_file_that_is_not_json_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{nope", encoding="utf-8")
    from orchestrator.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="cannot be read as JSON"):
        CliRunner().invoke(handle_command, [str(path)], catch_exceptions=False, standalone_mode=False)


def test_handle_closes_the_job_when_the_repository_cannot_be_fetched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `handle` is one delivery with no queue behind it: a transient failure must still end the waiting job.
    # The host is allow-listed but under .invalid, which never resolves (RFC 2606): no real host is contacted.
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    monkeypatch.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ORCHESTRATOR_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("ORCHESTRATOR_ALLOWED_HOSTS", "git.example.invalid")
    with DevOpsServer() as server:
        message = message_file(tmp_path / "m.json", server, "https://git.example.invalid/org/repo.git", "abc1234")
        done = handle(message, "--out", tmp_path / "run")
        assert done.exit_code == 3, done.output
        assert "gave up after 1 delivery" in done.output
        [event] = server.task_completed_events()
        assert event["result"] == "failed"


@pytest.mark.parametrize("where", ["local", "https"])
def test_a_kick_off_without_git_on_path_runs_and_closes_its_job(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_certs: tuple[Path, Path, Path]) -> None:
    # As on the Azure Functions Python image, which installs no git: the repository is fetched with dulwich.
    import shutil
    import sys

    from tests.git_server import GitHttpsServer

    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    monkeypatch.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ORCHESTRATOR_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("ORCHESTRATOR_ALLOWED_HOSTS", "127.0.0.1")
    monkeypatch.setenv("ORCHESTRATOR_TOKEN_HOSTS", "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(test_certs[0]))
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"}, PLAN)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    assert shutil.which("git") is None
    with DevOpsServer() as server, GitHttpsServer({"/org/nb.git": repo.bare}, test_certs, token=server.token) as git:
        url = str(repo.bare) if where == "local" else f"{git.url}/org/nb.git"
        extra = ["--allow-local-repos"] if where == "local" else []
        path = message_file(tmp_path / "m.json", server, url, commit)
        if where == "local":  # and DataContract-wrapped, as the task sends it by default: the same one TaskCompleted
            data = json.loads(path.read_text(encoding="utf-8"))
            data["body_base64"] = base64.b64encode(wrapped(json.dumps(data.pop("body")))).decode("ascii")
            path.write_text(json.dumps(data), encoding="utf-8")
        done = handle(path, *extra, "--out", tmp_path / "run")
        assert done.exit_code == 0, done.output
        assert [e["result"] for e in server.task_completed_events()] == ["succeeded"]
        assert (where == "https") == bool(git.requests)  # the token-holding server served the https case


def test_wait_for_completion_false_runs_locally_and_publishes_without_a_callback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    monkeypatch.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "state"))
    repo, commit = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"}, PLAN)
    with DevOpsServer() as server:
        server.task_record().update(state="completed", result="succeeded")  # the task did not wait
        with caplog.at_level("WARNING", logger="orchestrator.trigger"):
            done = handle(message_file(tmp_path / "m.json", server, str(repo.bare), commit), "--allow-local-repos",
                          "--out", tmp_path / "run")
        assert done.exit_code == 0, done.output
        assert "no TaskCompleted sent (waitForCompletion: false)" in done.output
        [run] = server.runs.values()
        assert [r["outcome"] for r in run["results"]] == ["Passed"]
        assert server.task_completed_events() == [] and server.calls("feed") == []
    assert any("waitForCompletion: false" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
