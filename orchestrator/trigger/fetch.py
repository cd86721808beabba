"""The notebook repository at the message's commit, fetched with git: shallow, only the history needed, from
allow-listed hosts, within size and time limits (DESIGN 7).

The URL comes from a queue message, so it is hostile until checked:
- https only, and the host must be on ORCHESTRATOR_ALLOWED_HOSTS; `file://`, `ssh://`, `git://`, scp-like
  `git@host:path`, remote helpers (`ext::sh -c ...`), local paths and option-like values (`--upload-pack=...`)
  are refused. Local paths only with allow_local (set by `orchestrator handle --allow-local-repos` alone);
- credentials written into the URL are refused (and never echoed back).

The DevOps job token authenticates to Azure Repos (ORCHESTRATOR_TOKEN_HOSTS) as the agent's checkout does,
with an `Authorization: bearer` extra header. It reaches git through its environment (GIT_CONFIG_COUNT /
GIT_CONFIG_KEY_n / GIT_CONFIG_VALUE_n), scoped to that host's URL: never on a command line (visible to every
user in `ps`), never in .git/config, never in a log. git runs with no system or global config, no credential
helper, no prompts, no hooks, no submodules, no LFS smudge, and symlinks checked out as plain files, so a
repository cannot make the trigger read outside its own folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.azureml.names import redact_url
from orchestrator.devops.context import Secret
from orchestrator.errors import InfrastructureError, InvalidInputError, Problem
from orchestrator.trigger.settings import TriggerSettings

log = logging.getLogger("orchestrator.trigger")

POLL_S = 0.2
# A short commit id can only be found from its ref; look this far back (each round deepens the fetch).
DEEPEN_STEPS = (10, 100, 1000)
# Environment variables git may keep from ours: how to reach the network, and which CAs to trust.
PASS_THROUGH = ("PATH", "SYSTEMROOT", "TMPDIR", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
                "CURL_CA_BUNDLE")
_AUTH_FAILURE = re.compile(r"authentication failed|could not read (username|password)|http 40[13]|"
                           r"the requested url returned error: 40[134]|terminal prompts disabled|access denied",
                           re.IGNORECASE)
_NOT_FOUND = re.compile(r"not our ref|couldn't find remote ref|unadvertised object|no such remote ref|"
                        r"does not appear to be a git repository|repository .* not found|upload-pack: not our ref",
                        re.IGNORECASE)


@dataclass(frozen=True)
class RepositorySource:
    url: str          # what git is given: the https URL (user name removed) or the local folder
    shown: str        # for messages and logs
    local: bool = False
    token_header_url: str | None = None  # the `http.<url>.extraheader` scope, when the token goes with it


class FetchError(InfrastructureError):
    """A fetch that may succeed later (network, time limit): the message is redelivered, within limits."""


def _refuse(url: str, why: str) -> InvalidInputError:
    return InvalidInputError([Problem("message", "body.repository.url", f"{redact_url(url)!r} refused: {why}")])


def check_url(url: str, settings: TriggerSettings, *, allow_local: bool = False) -> RepositorySource:
    """The repository `url` as git will be given it, or InvalidInputError saying why it is refused."""
    text = url.strip()
    if not text or text.startswith("-"):
        raise _refuse(url, "it looks like a command-line option")
    if re.search(r"[\x00-\x20\x7f]", text):
        raise _refuse(url, "it contains spaces or control characters")
    if "::" in text.split("/", 1)[0] or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", text):
        raise _refuse(url, "git remote helpers (`transport::address`) are not allowed")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme == "file" or (not scheme and _looks_local(text)):
        if not allow_local:
            raise _refuse(url, "not an https:// URL; local repositories are allowed only with "
                                "`orchestrator handle --allow-local-repos`")
        return _local_source(url, text[len("file://"):] if scheme == "file" else text)
    if not scheme:
        raise _refuse(url, "expected an https:// URL (scp-like `user@host:path` addresses are not allowed)")
    if scheme != "https":
        raise _refuse(url, f"only https:// repositories are allowed, not {scheme}://")
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:
        raise _refuse(url, f"not a valid URL ({exc})") from None
    if parts.password is not None:
        raise _refuse(url, "credentials in the URL are not allowed; the job token is used for Azure Repos")
    if parts.query or parts.fragment:
        raise _refuse(url, "a repository URL has no query or fragment")
    if not host or not settings.host_allowed(host):
        raise _refuse(url, f"the host {host or '(none)'} is not in ORCHESTRATOR_ALLOWED_HOSTS "
                           f"({', '.join(settings.allowed_hosts) or 'empty'})")
    netloc = host if port is None else f"{host}:{port}"
    # A user name (`https://org@dev.azure.com/...`, as Azure Repos shows clone URLs) is dropped: the token
    # header authenticates, and git would otherwise ask for that user's password.
    clean = f"https://{netloc}{parts.path or '/'}"
    header_url = f"https://{netloc}/" if settings.sends_token_to(host) else None
    return RepositorySource(url=clean, shown=clean, token_header_url=header_url)


def _looks_local(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or bool(re.match(r"^[A-Za-z]:[\\/]", text)) or (
        ":" not in text and "@" not in text)


def _local_source(url: str, path_text: str) -> RepositorySource:
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_dir():
        raise _refuse(url, f"no repository folder at {path}")
    return RepositorySource(url=str(path.resolve()), shown=str(path), local=True)


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    max_bytes: int


class _Git:
    """git commands in one folder, with our environment, one deadline and one size limit for them all."""

    def __init__(self, folder: Path, source: RepositorySource, token: Secret | None, limits: Limits) -> None:
        self.folder = folder
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s
        self._token = token.reveal() if token else ""
        self.env = _environment(source, token, folder.parent / "home")

    def run(self, *args: str, watch_size: bool = True) -> str:
        """Run git; returns stdout. Raises FetchError on the time or size limit, GitFailed otherwise."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            # Its own process group: a kill reaches git's helpers too (git-remote-https, index-pack).
            process = subprocess.Popen(["git", *args], cwd=self.folder, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err, start_new_session=True)
            try:
                self._wait(process, watch_size)
            finally:
                if process.poll() is None:
                    _kill(process)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", errors="replace")
            stderr = self.scrub(err.read().decode("utf-8", errors="replace"))
        if process.returncode != 0:
            raise GitFailed(args[0], process.returncode, stderr)
        return stdout

    def _wait(self, process: subprocess.Popen[bytes], watch_size: bool) -> None:
        while process.poll() is None:
            if time.monotonic() > self.deadline:
                _kill(process)
                raise FetchError(f"fetching the repository took longer than {self.limits.timeout_s:.0f} s "
                                 "(ORCHESTRATOR_FETCH_TIMEOUT_S)")
            if watch_size and folder_size(self.folder) > self.limits.max_bytes:
                _kill(process)
                raise InvalidInputError([Problem("message", "body.repository", (
                    f"the repository is larger than {self.limits.max_bytes} bytes (ORCHESTRATOR_MAX_REPOSITORY_BYTES); "
                    "keep data out of the notebook repository"))])
            time.sleep(POLL_S)

    def scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.wait()


class GitFailed(Exception):
    def __init__(self, command: str, code: int, stderr: str) -> None:
        self.command, self.code, self.stderr = command, code, stderr
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        self.summary = "; ".join(lines[-3:])[:600] or f"exit code {code}"
        super().__init__(f"git {command} failed: {self.summary}")


def _environment(source: RepositorySource, token: Secret | None, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    env = {name: os.environ[name] for name in PASS_THROUGH if name in os.environ}
    env.update({
        "HOME": str(home), "XDG_CONFIG_HOME": str(home), "LC_ALL": "C", "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "echo", "SSH_ASKPASS": "echo", "GCM_INTERACTIVE": "never", "GIT_LFS_SKIP_SMUDGE": "1",
        "GIT_PROTOCOL_FROM_USER": "0",
    })
    config = [
        ("protocol.allow", "never"), ("protocol.https.allow", "always"),
        ("protocol.file.allow", "always" if source.local else "never"),
        ("credential.helper", ""), ("core.hooksPath", os.devnull), ("core.symlinks", "false"),
        ("core.fsmonitor", "false"), ("submodule.recurse", "false"), ("fetch.recurseSubmodules", "false"),
        ("filter.lfs.required", "false"), ("filter.lfs.smudge", ""), ("filter.lfs.process", ""),
        ("advice.detachedHead", "false"), ("http.lowSpeedLimit", "1000"), ("http.lowSpeedTime", "60"),
    ]
    if token and source.token_header_url:
        # How the agent's checkout sends System.AccessToken to Azure Repos; scoped to that host's URL.
        config.append((f"http.{source.token_header_url}.extraheader", f"AUTHORIZATION: bearer {token.reveal()}"))
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def fetch(source: RepositorySource, commit: str, ref: str | None, folder: Path, *, token: Secret | None,
          limits: Limits, since: str | None = None) -> str:
    """Check out `commit` of `source` into the empty `folder` (its own sibling `home` is used as HOME).
    Returns the full commit id. InvalidInputError: the commit cannot be had (not found, access refused,
    too large); FetchError: try again later. `since`: also fetch that ref and enough history of both to find
    their merge base, for change-aware selection (best effort: without it, every notebook runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    git = _Git(folder, source, token, limits)
    started = time.monotonic()
    try:
        git.run("init", "--quiet", "--template=", ".", watch_size=False)
        sha = _fetch_commit(git, source, commit, ref)
        git.run("checkout", "--quiet", "--detach", "--force", sha)
    except GitFailed as failure:
        raise _classify(failure, source, commit, ref) from None
    if since:
        _fetch_merge_base(git, source, sha, since)
    size = folder_size(folder)
    if size > limits.max_bytes:
        raise InvalidInputError([Problem("message", "body.repository", (
            f"the checkout is {size} bytes, over ORCHESTRATOR_MAX_REPOSITORY_BYTES ({limits.max_bytes})"))])
    log.info("fetched repository=%s commit=%s secs=%.1f bytes=%d", source.shown, sha[:12],
             time.monotonic() - started, size)
    return sha


def _fetch_commit(git: _Git, source: RepositorySource, commit: str, ref: str | None) -> str:
    base = ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"]
    if len(commit) in (40, 64):
        try:  # Azure Repos, GitHub and git's protocol v2 serve a reachable commit by its id: one commit, no ref.
            git.run(*base, "--depth=1", "--", source.url, f"{commit}:refs/orchestrator/commit")
            return _resolve(git, commit) or commit
        except GitFailed as failure:
            if not ref or not _NOT_FOUND.search(failure.stderr):
                raise
            log.info("commit %s not served by id; fetching %s instead", commit[:12], ref)
    if not ref:
        raise InvalidInputError([Problem("message", "body.repository", (
            f"commit {commit!r} is abbreviated: give the full 40-character id, or a `ref` to find it in"))])
    refspec = f"+{ref}:refs/orchestrator/ref"
    git.run(*base, "--depth=1", "--", source.url, refspec)
    for depth in DEEPEN_STEPS:
        found = _resolve(git, commit)
        if found:
            return found
        git.run(*base, f"--deepen={depth}", "--", source.url, refspec)
    found = _resolve(git, commit)
    if found:
        return found
    raise InvalidInputError([Problem("message", "body.repository", (
        f"commit {commit} is not among the last {sum(DEEPEN_STEPS) + 1} commits of {ref}"))])


def _fetch_merge_base(git: _Git, source: RepositorySource, sha: str, since: str) -> None:
    """Fetch `since` where `orchestrator.changes` looks for a branch (refs/remotes/origin/<branch>), deepening
    both it and the commit until they meet. Failing that, the selection says why and runs every notebook."""
    base = ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"]
    branch = since.startswith("refs/heads/") or not since.startswith("refs/")
    local = "refs/remotes/origin/" + since.removeprefix("refs/heads/") if branch else since
    refspecs = [f"+{sha}:refs/orchestrator/commit", f"+{since}:{local}"]
    try:
        git.run(*base, "--depth=1", "--", source.url, refspecs[1])
        for depth in DEEPEN_STEPS:
            if _has_merge_base(git, sha, local):
                return
            git.run(*base, f"--deepen={depth}", "--", source.url, *refspecs)
    except (GitFailed, FetchError, InvalidInputError) as failure:  # InvalidInputError: the size limit
        log.warning("fetching %s for changed_since failed: %s", since, failure)


def _has_merge_base(git: _Git, sha: str, other: str) -> bool:
    try:
        git.run("merge-base", sha, other, watch_size=False)
        return True
    except GitFailed:
        return False


def _resolve(git: _Git, commit: str) -> str | None:
    try:
        return git.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}",
                       watch_size=False).strip() or None
    except GitFailed:
        return None


def _classify(failure: GitFailed, source: RepositorySource, commit: str, ref: str | None) -> Exception:
    where = f"{source.shown} at {commit}" + (f" ({ref})" if ref else "")
    if _AUTH_FAILURE.search(failure.stderr):
        return InvalidInputError([Problem("message", "body.repository", (
            f"access to {source.shown} was refused ({failure.summary}); the job token reaches only repositories "
            "its project's build service may read (check 'Limit job authorization scope')"))])
    if _NOT_FOUND.search(failure.stderr):
        return InvalidInputError([Problem("message", "body.repository", f"{where} was not found ({failure.summary})")])
    return FetchError(f"fetching {where} failed: {failure.summary}")


@contextlib.contextmanager
def checkout(source: RepositorySource, commit: str, ref: str | None, *, token: Secret | None,
             settings: TriggerSettings, since: str | None = None) -> Iterator[tuple[Path, str]]:
    """A temporary checkout (folder, full commit id), removed afterwards whatever happens."""
    parent = settings.work_dir
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="orchestrator-fetch-", dir=parent))
    try:
        folder = scratch / "repo"
        sha = fetch(source, commit, ref, folder, token=token,
                    limits=Limits(settings.fetch_timeout_s, settings.max_repository_bytes), since=since)
        yield folder, sha
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def strip_root(lines: Sequence[str], root: Path) -> list[str]:
    """Problems found in a checkout name files by their path in the repository, not in our temp folder."""
    prefixes = {str(root) + os.sep, str(root.resolve()) + os.sep}
    out = []
    for line in lines:
        for prefix in prefixes:
            line = line.replace(prefix, "")
        out.append(line)
    return out
