"""The notebook repository at the message's commit: fetched without a git executable (the Azure Functions
Python image has none), shallow, only the history needed, from allow-listed hosts, within size and time limits
(docs/architecture.md#queue-messages; docs/trigger.md, "Fetching the repository").

The URL comes from a queue message, so it is hostile until checked:
- https only, and the host must be on ORCHESTRATOR_ALLOWED_HOSTS; `file://`, `ssh://`, `git://`, scp-like
  `git@host:path`, remote helpers (`ext::sh -c ...`), local paths and option-like values (`--upload-pack=...`)
  are refused. Local paths only with allow_local (set by `orchestrator handle --allow-local-repos` alone);
- credentials written into the URL are refused (and never echoed back).

The transfer is git's smart HTTP protocol, spoken by dulwich (git_transport.py: every request and redirect
to the checked host only, the job token as `Authorization: bearer` to Azure Repos hosts only
(ORCHESTRATOR_TOKEN_HOSTS), as the agent's checkout sends it; one deadline and one byte limit); the commit's
files are then written by tree_writer.py (no symlinks, no submodules, nothing outside the folder). No hook,
filter, credential helper or config of this machine takes part: there is no git to run them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from orchestrator.azureml.names import redact_url
from orchestrator.devops.context import Secret
from orchestrator.errors import InvalidInputError, Problem
from orchestrator.trigger.git_transport import Budget, FetchError, Limits, http_client, local_client
from orchestrator.trigger.settings import TriggerSettings
from orchestrator.trigger.tree_writer import write_index, write_tree

__all__ = ["FetchError", "Limits", "RepositorySource", "check_url", "checkout", "fetch", "strip_root"]

log = logging.getLogger("orchestrator.trigger")

# A commit behind its ref's tip is looked for this far back (each round fetches the ref deeper).
DEEPEN_STEPS = (10, 100, 1000)
_NOT_FOUND = re.compile(r"invalid object|not our ref|unadvertised|not found|no such|unexpected http resp 404",
                        re.IGNORECASE)
_REFUSED = re.compile(r"unexpected http resp 40[13]|unauthori[sz]ed|forbidden", re.IGNORECASE)


@dataclass(frozen=True)
class RepositorySource:
    url: str          # what is fetched: the https URL (user name removed) or the local folder
    shown: str        # for messages and logs
    local: bool = False
    sends_token: bool = False  # an Azure Repos host (ORCHESTRATOR_TOKEN_HOSTS): the job token goes with it


def _refuse(url: str, why: str) -> InvalidInputError:
    return InvalidInputError([Problem("message", "body.repository.url", f"{redact_url(url)!r} refused: {why}")])


def check_url(url: str, settings: TriggerSettings, *, allow_local: bool = False) -> RepositorySource:
    """The repository `url` as it will be fetched, or InvalidInputError saying why it is refused."""
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
    # header authenticates.
    clean = f"https://{netloc}{parts.path or '/'}"
    return RepositorySource(url=clean, shown=clean, sends_token=settings.sends_token_to(host))


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


def fetch(source: RepositorySource, commit: str, ref: str | None, folder: Path, *, token: Secret | None,
          limits: Limits, since: str | None = None) -> str:
    """Write the files of `commit` of `source` into the empty `folder`, with the fetched history in its
    `.git` (HEAD detached at the commit, shallow), as a git checkout would leave it. Returns the full commit
    id. InvalidInputError: the commit cannot be had (not found, access refused, too large, unsafe paths);
    FetchError: try again later. `since`: also fetch that ref and enough history of both to find their merge
    base, for change-aware selection (best effort: without it, every notebook runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    budget = Budget(limits)
    started = time.monotonic()
    try:
        repo, sha = _fetch_commit(source, commit, ref, folder, token, budget)
        if since:
            repo = _fetch_merge_base(source, folder, sha, since, token, budget) or repo
        size, written = write_tree(repo.object_store, repo.object_store[sha.encode("ascii")].tree, folder,
                                   limits.max_bytes)
        write_index(repo, folder, written)
        repo.close()  # its pack files: a long-running worker must not keep them open
    except (InvalidInputError, FetchError):
        raise
    except Exception as exc:  # noqa: BLE001 - dulwich's and urllib3's errors, classified for a person
        raise _classify(exc, source, commit, ref, token) from None
    (folder / ".git" / "HEAD").write_text(sha + "\n", encoding="ascii")  # detached, as `git checkout <sha>`
    log.info("fetched repository=%s commit=%s secs=%.1f received=%d bytes=%d", source.shown, sha[:12],
             time.monotonic() - started, budget.received, size)
    return sha


Wants = Callable[[Mapping[bytes, bytes]], list[bytes]]


def _fetch_commit(source: RepositorySource, commit: str, ref: str | None, folder: Path, token: Secret | None,
                  budget: Budget) -> tuple[Any, str]:
    full = len(commit) in (40, 64)
    ref_name = ref.encode("utf-8") if ref else None
    advertised: dict[bytes, bytes] = {}

    def first(refs: Mapping[bytes, bytes]) -> list[bytes]:
        advertised.update({k: v for k, v in refs.items() if v})
        if full:  # by id: Azure Repos and GitHub serve any reachable commit; an advertised one, everyone
            return [commit.encode("ascii")]
        tip = advertised.get(ref_name) if ref_name else None
        return [tip] if tip else []

    if not full and not ref:
        raise InvalidInputError([Problem("message", "body.repository", (
            f"commit {commit!r} is abbreviated: give the full 40-character id, or a `ref` to find it in"))])
    try:
        repo = _fetch(source, folder, first, 1, token, budget)
        found = _find(repo.object_store, commit,
                      [commit.encode("ascii")] if full else [advertised.get(ref_name or b"", b"")])
        if found:
            return repo, found
    except Exception as exc:  # noqa: BLE001 - a server that does not serve commits by id: try the ref
        if not (full and ref and _not_found(exc)):
            raise
        log.info("commit %s not served by id; fetching %s instead", commit[:12], ref)
    tip = advertised.get(ref_name or b"")
    if not tip:
        raise InvalidInputError([Problem("message", "body.repository", (
            f"{source.shown} has no {ref or 'ref'} holding commit {commit}"))])
    for depth in DEEPEN_STEPS:
        repo = _fetch(source, folder, lambda refs: [tip], depth, token, budget)
        found = _find(repo.object_store, commit, [tip])
        if found:
            return repo, found
    raise InvalidInputError([Problem("message", "body.repository", (
        f"commit {commit} is not among the last {DEEPEN_STEPS[-1]} commits of {ref}"))])


def _fetch(source: RepositorySource, folder: Path, wants: Wants, depth: int, token: Secret | None,
           budget: Budget, refs_seen: dict[bytes, bytes] | None = None) -> Any:
    """A fresh repository in `folder`/.git holding what the server sent for `wants` at `depth` (shallow)."""
    from dulwich.repo import Repo

    shutil.rmtree(folder / ".git", ignore_errors=True)  # an earlier, shallower try (closed by the caller or GC)
    repo = Repo.init(str(folder), mkdir=False)

    def chosen(refs: Mapping[bytes, bytes], depth: int | None = None) -> list[bytes]:
        if refs_seen is not None:
            refs_seen.update({k: v for k, v in refs.items() if v})
        return wants(refs)

    if source.local:
        client, path = local_client(budget), source.url
    else:
        client, path = http_client(source.url, token if source.sends_token else None, budget), urlsplit(source.url).path
    client.fetch(path, repo, determine_wants=chosen, depth=depth, progress=lambda _text: budget.check_time())
    return repo


def _fetch_merge_base(source: RepositorySource, folder: Path, sha: str, since: str, token: Secret | None,
                      budget: Budget) -> Any | None:
    """The commit and `since` fetched together, deeper until they meet, with `since` where
    orchestrator.changes looks for a branch (refs/remotes/origin/<branch>). None (and a warning) when that
    cannot be done: change-aware selection then says why and runs every notebook."""
    from dulwich.graph import find_merge_base

    branch = since.startswith("refs/heads/") or not since.startswith("refs/")
    local = ("refs/remotes/origin/" + since.removeprefix("refs/heads/") if branch else since).encode("utf-8")
    remote = (since if since.startswith("refs/") else f"refs/heads/{since}").encode("utf-8")
    seen: dict[bytes, bytes] = {}
    try:
        for depth in (1, *DEEPEN_STEPS):
            repo = _fetch(source, folder, lambda refs: [sha.encode("ascii")] + ([refs[remote]] if remote in refs else []),
                          depth, token, budget, seen)
            tip = seen.get(remote)
            if tip is None:
                raise LookupError(f"{since} is not a ref of {source.shown}")
            repo.refs[local] = tip
            with contextlib.suppress(KeyError):  # a parent beyond the shallow boundary: not deep enough yet
                if find_merge_base(repo, [sha.encode("ascii"), tip]):  # type: ignore[list-item]
                    return repo
        raise LookupError(f"no common commit within {DEEPEN_STEPS[-1]} commits")
    except (InvalidInputError, FetchError):
        raise
    except Exception as exc:  # noqa: BLE001 - best effort, as documented in docs/changes.md
        log.warning("fetching %s for changed_since failed: %s", since, exc)
        _fetch(source, folder, lambda refs: [sha.encode("ascii")], 1, token, budget)
        return None


def _find(store: Any, commit: str, tips: list[bytes]) -> str | None:
    """The one fetched commit whose id starts with `commit`, walking back from `tips` through what is there."""
    from dulwich.objects import Commit

    matches: set[str] = set()
    seen: set[bytes] = set()
    queue = [tip for tip in tips if tip]
    while queue:
        sha = queue.pop()
        if sha in seen or sha not in store:
            continue
        seen.add(sha)
        obj = store[sha]
        if not isinstance(obj, Commit):
            continue
        if sha.decode("ascii").startswith(commit):
            matches.add(sha.decode("ascii"))
        queue.extend(obj.parents)
    if len(matches) > 1:
        raise InvalidInputError([Problem("message", "body.repository", (
            f"commit {commit!r} is ambiguous ({len(matches)} commits start with it); give the full id"))])
    return matches.pop() if matches else None


def _not_found(exc: Exception) -> bool:
    # KeyError: a local repository lacks the object; NotGitRepository: dulwich's 404.
    return isinstance(exc, KeyError) or type(exc).__name__ == "NotGitRepository" or bool(_NOT_FOUND.search(str(exc)))


def _classify(exc: Exception, source: RepositorySource, commit: str, ref: str | None,
              token: Secret | None) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if token:
        text = text.replace(token.reveal(), "***")
    text = text[:600]
    where = f"{source.shown} at {commit}" + (f" ({ref})" if ref else "")
    if type(exc).__name__ == "HTTPUnauthorized" or _REFUSED.search(text):
        return InvalidInputError([Problem("message", "body.repository", (
            f"access to {source.shown} was refused ({text}); the job token reaches only repositories its "
            "project's build service may read (check 'Limit job authorization scope')"))])
    if _not_found(exc):
        return InvalidInputError([Problem("message", "body.repository", f"{where} was not found ({text})")])
    return FetchError(f"fetching {where} failed: {text}")


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
