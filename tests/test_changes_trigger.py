"""`changed_since` in a kick_off message: the trigger fetches the target branch and enough history of both to
find their merge base (its checkout is shallow), runs only the notebooks the pull request can affect, and
DevOps shows the others as not executed, "unchanged since <target>". Without the history, every notebook
runs and says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.errors import InvalidInputError
from orchestrator.trigger.commands import handle_command
from orchestrator.trigger.messages import parse_body
from tests.builders import make_notebook
from tests.devops_server import DevOpsServer, allow_loopback, isolate_sdk_caches
from tests.trigger_support import git, kick_off_body, notebook_repo

PLAN = "version: 1\nexperiment: pr-demo\ndefaults:\n  timeout: 120\nnotebooks:\n  - glob: '*.ipynb'\n"


def test_a_pull_request_kick_off_runs_what_it_touches_and_devops_shows_the_rest_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_sdk_caches(monkeypatch, tmp_path / "sdk-cache")
    allow_loopback(monkeypatch)
    monkeypatch.setenv("ORCHESTRATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ORCHESTRATOR_WORK_DIR", str(tmp_path / "work"))
    repo, _ = notebook_repo(tmp_path / "repo", {"touched.ipynb": "x = 1", "untouched.ipynb": "y = 1"}, PLAN)
    for number in range(3):  # main moves on: history the shallow fetch must deepen through
        (repo.work / "notes.md").write_text(str(number), encoding="utf-8")
        repo.commit(f"main {number}")
    git("checkout", "-q", "-b", "feature", cwd=repo.work)
    make_notebook(repo.work / "touched.ipynb", "x = 2")
    git("commit", "-q", "-am", "touch one notebook", cwd=repo.work)
    git("push", "-q", str(repo.bare), "HEAD:refs/heads/feature", cwd=repo.work)
    head = git("rev-parse", "HEAD", cwd=repo.work)

    with DevOpsServer() as server:
        body = kick_off_body(str(repo.bare), head, changed_since="refs/heads/main")
        body["repository"]["ref"] = "refs/heads/feature"
        message = tmp_path / "pr.json"
        message.write_text(json.dumps({"message_id": "pr", "body": body,
                                       "application_properties": server.message_properties()}), encoding="utf-8")
        done = CliRunner().invoke(handle_command, [str(message), "--allow-local-repos", "--out",
                                                   str(tmp_path / "run"), "--jobs", "2"], catch_exceptions=False)
        assert done.exit_code == 0, done.output
        [run] = server.runs.values()
        outcomes = {result["testCaseTitle"]: result for result in run["results"]}
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    steps = {step["notebook"]: step for step in results["steps"]}
    assert steps["touched.ipynb"]["status"] == "passed"
    assert steps["untouched.ipynb"]["status"] == "skipped"
    assert steps["untouched.ipynb"]["reason"] == "unchanged since refs/heads/main"
    assert outcomes["touched.ipynb"]["outcome"] == "Passed"
    assert outcomes["untouched.ipynb"]["outcome"] == "NotExecuted"
    assert outcomes["untouched.ipynb"]["errorMessage"] == "skipped: unchanged since refs/heads/main"


def test_changed_since_must_look_like_a_git_ref() -> None:
    body = kick_off_body("https://dev.azure.com/o/p/_git/r", "a" * 40, changed_since="--upload-pack=evil")
    with pytest.raises(InvalidInputError, match=r"body\.changed_since"):
        parse_body(body)
    assert parse_body(kick_off_body("https://x/r", "a" * 40, changed_since="refs/heads/main")).changed_since \
        == "refs/heads/main"
