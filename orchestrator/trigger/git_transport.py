"""The git smart-HTTP transport for fetching a notebook repository without a git executable: dulwich, a pure
Python git implementation (docs/trigger.md, "Fetching the repository" says why this and not an archive API).

What this module adds to dulwich's client, because the URL comes from a queue message:
- every request, redirects included, goes only to the allow-listed host (https) it was checked for; a
  redirect elsewhere is refused before it is sent;
- the job token goes only to a token host (ORCHESTRATOR_TOKEN_HOSTS), as `Authorization: bearer` (how the
  agent's checkout authenticates to Azure Repos), and only to the origin it was meant for;
- one deadline and one size limit over the whole transfer, checked on every chunk of pack data received,
  and a socket timeout so that a server that stops sending cannot hold the fetch past the deadline.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import urllib3

from orchestrator.devops.context import Secret
from orchestrator.errors import InfrastructureError, InvalidInputError, Problem

# How long one socket read may wait; the whole fetch is bounded by the deadline besides.
READ_TIMEOUT_S = 60.0


class FetchError(InfrastructureError):
    """A fetch that may succeed later (network, time limit): the message is redelivered, within limits."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    max_bytes: int


class Budget:
    """The deadline and byte count of one fetch, shared by all its requests."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s
        self.received = 0

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self) -> None:
        if self.remaining_s() <= 0:
            raise FetchError(f"fetching the repository took longer than {self.limits.timeout_s:.0f} s "
                             "(ORCHESTRATOR_FETCH_TIMEOUT_S)")

    def count(self, size: int) -> None:
        self.received += size
        if self.received > self.limits.max_bytes:
            raise too_large(f"the repository's history is larger than {self.limits.max_bytes} bytes")
        self.check_time()


def too_large(what: str) -> InvalidInputError:
    return InvalidInputError([Problem("message", "body.repository", (
        f"{what} (ORCHESTRATOR_MAX_REPOSITORY_BYTES); keep data out of the notebook repository"))])


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _ssl_context() -> ssl.SSLContext:
    """The system's CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured), else certifi's: a slim image may have none."""
    context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None)
    if not context.get_ca_certs() and not os.environ.get("SSL_CERT_DIR"):
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except ImportError:
            pass
    return context


class GuardedPoolManager(urllib3.PoolManager):
    """urllib3 follows redirects by calling urlopen again with the new URL: each hop passes here."""

    def __init__(self, allowed_origin: tuple[str, str, int], token: Secret | None, budget: Budget) -> None:
        # No retries (redelivery is the retry), a few redirects, each one checked by urlopen below.
        super().__init__(ssl_context=_ssl_context(),
                         retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5))
        self._allowed = allowed_origin
        self._token = token
        self._budget = budget

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> Any:  # type: ignore[override]
        if _origin(url) != self._allowed:
            scheme, host, port = _origin(url)
            raise InvalidInputError([Problem("message", "body.repository", (
                f"the repository server redirected to {scheme}://{host}:{port}, which is not the host that was "
                "allowed; nothing was sent there"))])
        self._budget.check_time()
        headers = dict(kw.pop("headers", None) or self.headers)
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
        if self._token:
            headers["Authorization"] = f"bearer {self._token.reveal()}"
        kw["timeout"] = urllib3.Timeout(connect=min(30.0, max(1.0, self._budget.remaining_s())),
                                        read=min(READ_TIMEOUT_S, max(1.0, self._budget.remaining_s())))
        return super().urlopen(method, url, redirect=redirect, headers=headers, **kw)


def http_client(url: str, token: Secret | None, budget: Budget) -> Any:
    """A dulwich HTTP client for `url` (already checked by fetch.check_url) whose pack data is counted."""
    from dulwich.client import Urllib3HttpGitClient

    pool = GuardedPoolManager(_origin(url), token, budget)
    client = Urllib3HttpGitClient(url, pool_manager=pool, quiet=True)
    return _counted(client, budget)


def local_client(budget: Budget) -> Any:
    from dulwich.client import LocalGitClient

    return _counted(LocalGitClient(), budget)


def _counted(client: Any, budget: Budget) -> Any:
    """Wrap the client's fetch_pack so that every chunk of pack data is counted against the budget."""
    fetch_pack: Callable[..., Any] = client.fetch_pack

    def counted_fetch_pack(path: Any, determine_wants: Any, graph_walker: Any, pack_data: Callable[[bytes], Any],
                           *args: Any, **kwargs: Any) -> Any:
        def counted(data: bytes) -> Any:
            budget.count(len(data))
            return pack_data(data)

        return fetch_pack(path, determine_wants, graph_walker, counted, *args, **kwargs)

    client.fetch_pack = counted_fetch_pack
    return client
