"""Fetching the repository without a git executable (dulwich): shallow, by commit, from allow-listed hosts only;
the job token as a bearer header, only to Azure Repos hosts, never elsewhere (redirects included); size and
time limits. Local bare repositories (made with git, fetched with git absent from PATH) and the same
repositories served over HTTPS by a strict local server (tests/git_server.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.context import Secret
from orchestrator.errors import InvalidInputError
from orchestrator.trigger.fetch import FetchError, Limits, check_url, fetch
from orchestrator.trigger.settings import TriggerSettings
from tests.git_server import GitHttpsServer
from tests.trigger_support import NotebookRepo, notebook_repo

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


def test_a_full_commit_id_is_fetched_alone(tmp_path: Path, repo: tuple[NotebookRepo, list[str]], no_git: None) -> None:
    from dulwich.objects import Commit
    from dulwich.repo import Repo

    repository, commits = repo
    source = check_url(str(repository.bare), SETTINGS, allow_local=True)
    sha = fetch(source, commits[1], None, tmp_path / "out", token=None, limits=LIMITS)
    assert sha == commits[1]
    store = Repo(str(tmp_path / "out")).object_store
    assert [o for o in (store[s] for s in store) if isinstance(o, Commit)] == [store[sha.encode()]]  # shallow
    assert (tmp_path / "out" / "f0.txt").is_file() and not (tmp_path / "out" / "f1.txt").exists()


def test_a_short_commit_id_is_found_from_its_ref_by_deepening(tmp_path: Path, repo: tuple[NotebookRepo, list[str]],
                                                             no_git: None) -> None:
    repository, commits = repo
    source = check_url(f"file://{repository.bare}", SETTINGS, allow_local=True)
    sha = fetch(source, commits[0][:8], "refs/heads/main", tmp_path / "out", token=None, limits=LIMITS)
    assert sha == commits[0] and (tmp_path / "out" / "a.ipynb").is_file()
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


def https_repo(tmp_path: Path, repository: NotebookRepo, monkeypatch: pytest.MonkeyPatch,
               certs: tuple[Path, Path, Path], **kwargs: Any) -> GitHttpsServer:
    """The repository served over https on 127.0.0.1, trusted through SSL_CERT_FILE and allow-listed."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certs[0]))
    return GitHttpsServer({"/org/notebooks.git": repository.bare}, certs, **kwargs)


HTTPS = TriggerSettings(allowed_hosts=("127.0.0.1",), token_hosts=("127.0.0.1",))


def test_an_https_repository_is_fetched_without_git_with_the_token_as_a_bearer_header(
        tmp_path: Path, repo: tuple[NotebookRepo, list[str]], monkeypatch: pytest.MonkeyPatch,
        test_certs: tuple[Path, Path, Path], no_git: None) -> None:
    repository, commits = repo
    token = "tok-RECOGNISABLE-fetch"
    with https_repo(tmp_path, repository, monkeypatch, test_certs, token=token) as server:
        source = check_url(f"https://org@{server.url.removeprefix('https://')}/org/notebooks.git", HTTPS)
        assert source.sends_token and "org@" not in source.url
        sha = fetch(source, commits[-1], "refs/heads/main", tmp_path / "out", token=Secret(token), limits=LIMITS)
        # A commit behind the tip, by its abbreviated id: found from the ref, deepening.
        older = fetch(source, commits[1][:10], "refs/heads/main", tmp_path / "older", token=Secret(token),
                      limits=LIMITS)
        assert server.requests and all(auth == f"bearer {token}" for _m, _p, auth in server.requests)
        # A wrong token is refused by the server: a readable refusal, the token never echoed.
        with pytest.raises(InvalidInputError, match="refused") as caught:
            fetch(source, commits[-1], None, tmp_path / "bad", token=Secret("tok-wrong"), limits=LIMITS)
        assert "tok-wrong" not in str(caught.value)
    assert sha == commits[-1] and older == commits[1]
    assert (tmp_path / "out" / "f2.txt").read_text() == "2" and not (tmp_path / "older" / "f1.txt").exists()
    assert (tmp_path / "out" / ".git" / "HEAD").read_text().strip() == sha
    assert all(token.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_a_third_party_host_never_gets_the_token_and_a_redirect_elsewhere_is_refused(
        tmp_path: Path, repo: tuple[NotebookRepo, list[str]], monkeypatch: pytest.MonkeyPatch,
        test_certs: tuple[Path, Path, Path], no_git: None) -> None:
    from tests.devops_server import AttackerServer

    repository, commits = repo
    settings = TriggerSettings(allowed_hosts=("127.0.0.1",), token_hosts=("dev.azure.com",))
    with https_repo(tmp_path, repository, monkeypatch, test_certs) as server, AttackerServer() as attacker:
        source = check_url(f"{server.url}/org/notebooks.git", settings)
        assert not source.sends_token
        fetch(source, commits[-1], None, tmp_path / "out", token=Secret("tok-x"), limits=LIMITS)
        assert all(auth is None for _m, _p, auth in server.requests)
        server.redirect_to = attacker.url.rstrip("/")
        with pytest.raises(InvalidInputError, match="redirected to http://127.0.0.1:.*nothing was sent"):
            fetch(source, commits[-1], None, tmp_path / "again", token=Secret("tok-x"), limits=LIMITS)
        assert attacker.received == []


def test_an_https_fetch_past_its_limits_is_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_certs: tuple[Path, Path, Path]) -> None:
    repository, _ = notebook_repo(tmp_path / "repo", {"a.ipynb": "x = 1"})
    (repository.work / "data.bin").write_bytes(os.urandom(300_000))
    commit = repository.commit("data")
    with https_repo(tmp_path, repository, monkeypatch, test_certs) as server:
        source = check_url(f"{server.url}/org/notebooks.git", HTTPS)
        with pytest.raises(InvalidInputError, match="history is larger than 100000 bytes"):
            fetch(source, commit, None, tmp_path / "out", token=None, limits=Limits(timeout_s=60.0, max_bytes=100_000))
        with pytest.raises(FetchError, match="longer than 0 s"):
            fetch(source, commit, None, tmp_path / "out2", token=None, limits=Limits(timeout_s=1e-9, max_bytes=10 ** 8))


def test_an_unreachable_host_is_transient(tmp_path: Path, no_git: None) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = check_url(f"https://127.0.0.1:{port}/org/notebooks.git", HTTPS)
    with pytest.raises(FetchError, match="failed"):
        fetch(source, "0123456789abcdef0123456789abcdef01234567", None, tmp_path / "out", token=None, limits=LIMITS)


def test_paths_that_would_escape_the_checkout_are_refused(tmp_path: Path) -> None:
    from dulwich.objects import Blob, Tree
    from dulwich.repo import MemoryRepo

    from orchestrator.trigger.tree_writer import write_tree

    repo = MemoryRepo()
    blob = Blob.from_string(b"x")
    repo.object_store.add_object(blob)
    for name in (b"..", b".git", b".GIT", b"a\\b"):
        tree = Tree()
        tree.add(name, 0o100644, blob.id)
        repo.object_store.add_object(tree)
        (tmp_path / name.decode()[:2].replace(".", "d")).mkdir(exist_ok=True)
        with pytest.raises(InvalidInputError, match="cannot be checked out safely"):
            write_tree(repo.object_store, tree.id, tmp_path / name.decode()[:2].replace(".", "d"), 10 ** 6)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


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
    assert check_url("https://org.visualstudio.com/p/_git/r", SETTINGS).sends_token
    with pytest.raises(InvalidInputError):
        check_url("https://visualstudio.com.evil.example/r", SETTINGS)
