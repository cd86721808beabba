"""Fetching the repository: shallow, by commit, from allow-listed hosts only; the job token only in git's
environment (never its command line), only for Azure Repos hosts; size and time limits. Real git against
local bare repositories, and a stand-in `git` on PATH to see what an https fetch would be given."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.context import Secret
from orchestrator.errors import InvalidInputError
from orchestrator.trigger.fetch import FetchError, Limits, check_url, fetch
from orchestrator.trigger.settings import TriggerSettings
from tests.test_trigger_support import NotebookRepo, git, notebook_repo

SETTINGS = TriggerSettings(allowed_hosts=("dev.azure.com", "*.visualstudio.com", "github.com"))
LIMITS = Limits(timeout_s=60.0, max_bytes=10 ** 8)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[NotebookRepo, list[str]]:
    repository, first = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    commits = [first]
    for n in range(3):
        (repository.work / f"f{n}.txt").write_text(str(n))
        commits.append(repository.commit(f"c{n}"))
    return repository, commits


def test_a_full_commit_id_is_fetched_alone(tmp_path: Path, repo: tuple[NotebookRepo, list[str]]) -> None:
    repository, commits = repo
    source = check_url(str(repository.bare), SETTINGS, allow_local=True)
    sha = fetch(source, commits[1], None, tmp_path / "out", token=None, limits=LIMITS)
    assert sha == commits[1]
    assert git("rev-list", "--count", "HEAD", cwd=tmp_path / "out") == "1"  # shallow: only what is needed
    assert (tmp_path / "out" / "f0.txt").is_file() and not (tmp_path / "out" / "f1.txt").exists()
    assert not (tmp_path / "out" / ".git" / "hooks").exists()  # no template: no sample hooks


def test_a_short_commit_id_is_found_from_its_ref_by_deepening(tmp_path: Path, repo: tuple[NotebookRepo, list[str]]) -> None:
    repository, commits = repo
    source = check_url(f"file://{repository.bare}", SETTINGS, allow_local=True)
    sha = fetch(source, commits[0][:8], "refs/heads/main", tmp_path / "out", token=None, limits=LIMITS)
    assert sha == commits[0]
    assert int(git("rev-list", "--count", "HEAD", cwd=tmp_path / "out")) == 1
    with pytest.raises(InvalidInputError, match="abbreviated"):
        fetch(source, commits[0][:8], None, tmp_path / "out2", token=None, limits=LIMITS)


def test_an_unknown_commit_is_refused_with_a_clear_reason(tmp_path: Path, repo: tuple[NotebookRepo, list[str]]) -> None:
    repository, _ = repo
    source = check_url(str(repository.bare), SETTINGS, allow_local=True)
    with pytest.raises(InvalidInputError, match="not found|not among"):
        fetch(source, "f" * 40, "refs/heads/main", tmp_path / "out", token=None, limits=LIMITS)


def test_symlinks_in_the_repository_are_checked_out_as_plain_files(tmp_path: Path) -> None:
    repository, _ = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    os.symlink("/etc/passwd", repository.work / "passwd.ipynb")
    commit = repository.commit("a link out of the repository")
    source = check_url(str(repository.bare), SETTINGS, allow_local=True)
    fetch(source, commit, None, tmp_path / "out", token=None, limits=LIMITS)
    link = tmp_path / "out" / "passwd.ipynb"
    assert not link.is_symlink() and link.read_text() == "/etc/passwd"


def test_the_size_limit_stops_a_repository_that_is_too_large(tmp_path: Path) -> None:
    repository, _ = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    (repository.work / "data.bin").write_bytes(os.urandom(300_000))
    commit = repository.commit("data")
    source = check_url(str(repository.bare), SETTINGS, allow_local=True)
    with pytest.raises(InvalidInputError, match="ORCHESTRATOR_MAX_REPOSITORY_BYTES"):
        fetch(source, commit, None, tmp_path / "out", token=None, limits=Limits(timeout_s=60.0, max_bytes=100_000))


FAKE_GIT = """#!/bin/sh
# Records each call (argv, and the config it was given through the environment), then plays git's part.
python3 - "$@" <<'PY'
import json, os, sys
calls = os.path.join(os.environ["HOME"], "..", "calls.jsonl")
config = {os.environ.get(f"GIT_CONFIG_KEY_{i}"): os.environ.get(f"GIT_CONFIG_VALUE_{i}")
          for i in range(int(os.environ.get("GIT_CONFIG_COUNT", "0")))}
with open(calls, "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "config": config}) + "\\n")
if sys.argv[1:2] == ["rev-parse"]:
    print("0123456789abcdef0123456789abcdef01234567")
PY
case "$1" in fetch) [ -f "$HOME/../slow" ] && sleep 30 ;; esac
exit 0
"""


@pytest.fixture
def fake_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "git"
    script.write_text(FAKE_GIT)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls.jsonl"


def _calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_token_reaches_azure_repos_only_through_git_config_in_the_environment(tmp_path: Path, fake_git: Path) -> None:
    token = "tok-RECOGNISABLE-fetch"
    source = check_url("https://org@dev.azure.com/org/proj/_git/notebooks", SETTINGS)
    fetch(source, "0123456789abcdef0123456789abcdef01234567", None, tmp_path / "repo", token=Secret(token),
          limits=LIMITS)
    calls = _calls(fake_git)
    assert [c["argv"][0] for c in calls] == ["init", "fetch", "rev-parse", "checkout"]
    assert all(token not in " ".join(c["argv"]) for c in calls)
    fetch_call = calls[1]
    assert fetch_call["argv"][-2:] == ["https://dev.azure.com/org/proj/_git/notebooks",
                                        "0123456789abcdef0123456789abcdef01234567:refs/orchestrator/commit"]
    assert "--depth=1" in fetch_call["argv"] and "--" in fetch_call["argv"]
    config = fetch_call["config"]
    assert config["http.https://dev.azure.com/.extraheader"] == f"AUTHORIZATION: bearer {token}"
    assert config["protocol.allow"] == "never" and config["credential.helper"] == ""
    assert config["protocol.file.allow"] == "never" and config["core.symlinks"] == "false"
    assert all(token not in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
               and p != fake_git)  # nothing written to disk (a real git keeps -c/env config out of .git/config)


def test_an_allow_listed_third_party_host_never_gets_the_token(tmp_path: Path, fake_git: Path) -> None:
    source = check_url("https://github.com/org/notebooks.git", SETTINGS)
    fetch(source, "0123456789abcdef0123456789abcdef01234567", None, tmp_path / "repo", token=Secret("tok-x"),
          limits=LIMITS)
    assert all("tok-x" not in json.dumps(c) for c in _calls(fake_git))


def test_a_fetch_past_the_time_limit_is_stopped_as_transient(tmp_path: Path, fake_git: Path) -> None:
    (tmp_path / "slow").touch()  # git gets a minimal environment, so the stand-in reads a file, not a variable
    source = check_url("https://dev.azure.com/org/proj/_git/notebooks", SETTINGS)
    with pytest.raises(FetchError, match="longer than 1 s"):
        fetch(source, "0123456789abcdef0123456789abcdef01234567", None, tmp_path / "repo", token=None,
              limits=Limits(timeout_s=1.0, max_bytes=10 ** 8))


@pytest.mark.parametrize(("url", "why"), [
    ("file:///srv/repo.git", "--allow-local-repos"), ("/srv/repo.git", "--allow-local-repos"),
    ("./repo", "--allow-local-repos"), ("ssh://git@dev.azure.com/v3/o/p/r", "only https"),
    ("git://dev.azure.com/r", "only https"), ("git@ssh.dev.azure.com:v3/o/p/r", "scp-like"),
    ("--upload-pack=touch /tmp/x", "command-line option"), ("-oProxyCommand=x", "command-line option"),
    ("ext::sh%20-c%20touch", "remote helper"), ("fd::17", "remote helper"),
    ("https://evil.example.com/r.git", "ORCHESTRATOR_ALLOWED_HOSTS"),
    ("https://dev.azure.com.evil.example.com/r", "ORCHESTRATOR_ALLOWED_HOSTS"),
    ("https://user:secret@dev.azure.com/o/_git/r", "credentials"), ("https://dev.azure.com/o/_git/r?x=1", "query"),
    ("https://dev.azure.com:99999/r", "not a valid URL"),
])
def test_refused_repository_urls(url: str, why: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_url(url, SETTINGS)
    assert why in str(caught.value) and "secret" not in str(caught.value)


def test_subdomain_patterns_match_only_subdomains() -> None:
    assert check_url("https://org.visualstudio.com/p/_git/r", SETTINGS).token_header_url == "https://org.visualstudio.com/"
    with pytest.raises(InvalidInputError):
        check_url("https://visualstudio.com.evil.example/r", SETTINGS)
    assert subprocess.run(["git", "--version"], capture_output=True).returncode == 0
