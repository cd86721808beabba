"""HTTP to Azure DevOps: one retry policy and one response check, shared by the raw calls (task events,
feed, logs, timeline records) and by the azure-devops SDK's calls (test runs), so both obey the same rules:

- 429, 408 and 5xx, connection errors and timeouts are transient: retried with exponential backoff,
  honouring Retry-After, within a bounded total time (docs/devops-protocol.md#pitfalls: "retry with backoff");
- 401, 403 and 203 (an HTML sign-in page), or HTML where JSON was due, are terminal: the job token
  expired or the job is gone (docs/devops-protocol.md#callback-base-and-authentication, docs/devops-protocol.md#timeouts-token-lifetime-cancellation, docs/devops-protocol.md#pitfalls). Never retried;
- any other 4xx is a request the server will never accept: not retried, reported with its message.

The token travels only in the Authorization header; nothing here logs headers or bodies.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter

from orchestrator.errors import InfrastructureError

log = logging.getLogger("orchestrator.devops")

T = TypeVar("T")

# Statuses worth another try. 408/429/5xx: the request was not (or may not have been) processed.
TRANSIENT_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# 203 is how Azure DevOps answers an expired or unknown credential with an HTML sign-in page [I-5520].
AUTH_STATUSES = frozenset({203, 401, 403})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one call. The defaults fit a pipeline step; tests pass tiny delays and timeouts.

    attempts: tries in all, the first included.
    backoff_s / max_backoff_s: the pause before retry n is backoff_s * 2**(n-1), at most max_backoff_s,
        plus up to `jitter` of itself; a Retry-After from the server replaces it.
    budget_s: no retry starts whose pause would end later than this after the first try, so one call
        never holds the reporting step longer than that (plus its own timeouts).
    """

    attempts: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    budget_s: float = 180.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    jitter: float = 0.1

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)

    def pause(self, retry: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return float(base * (1.0 + random.uniform(0.0, self.jitter)))


DEFAULT_POLICY = RetryPolicy()


class DevOpsError(InfrastructureError):
    """A call to Azure DevOps failed for good (exit code 3 at the CLI)."""


class DevOpsAuthError(DevOpsError):
    """401/403/203: the token expired or the job is gone. Terminal: retrying cannot help."""

    def __init__(self, status: int, what: str) -> None:
        self.status = status
        super().__init__(
            f"Azure DevOps refused the job token (HTTP {status}) for {what}: the token expired or the job "
            "is gone; not retrying"
        )


class DevOpsRequestError(DevOpsError):
    """A 4xx other than auth: the server will never accept this request as sent."""

    def __init__(self, status: int, what: str, detail: str) -> None:
        self.status = status
        super().__init__(f"Azure DevOps rejected {what} (HTTP {status}): {detail}")


class DevOpsUnavailableError(DevOpsError):
    """Transient failures went on past the retry policy's attempts or time budget."""


class DevOpsHostError(DevOpsError):
    """A request to an origin outside the allow-list (hosts.py), stopped before it was sent. Terminal."""


class TransientError(Exception):
    """One transient failure; raised inside a call and caught by call_with_retries (never escapes it)."""

    def __init__(self, what: str, status: int | None, retry_after: float | None, detail: str) -> None:
        self.what = what
        self.status = status
        self.retry_after = retry_after
        self.detail = detail
        super().__init__(f"{what}: {detail}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def describe(method: str, url: str) -> str:
    """'POST /org/proj/_apis/...' without scheme, host or query: short, and free of anything secret."""
    path = url.split("://", 1)[-1]
    path = "/" + path.split("/", 1)[1] if "/" in path else "/"
    return f"{method} {path.split('?', 1)[0]}"


def _server_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:500]
    return (response.text or response.reason or "").strip()[:300]


def check_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Raise for anything but a usable 2xx. Also a requests response hook (the SDK's calls go through it)."""
    status = response.status_code
    what = describe(response.request.method or "?", response.url)
    content_type = response.headers.get("Content-Type", "")
    if status in AUTH_STATUSES or (200 <= status < 300 and content_type.lower().startswith("text/html")):
        response.close()
        raise DevOpsAuthError(status, what)
    if status in TRANSIENT_STATUSES:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        detail = f"HTTP {status} {_server_message(response)}".strip()
        response.close()
        raise TransientError(what, status, retry_after, detail)
    if not 200 <= status < 300:
        detail = _server_message(response)
        response.close()
        raise DevOpsRequestError(status, what, detail)


def _network_failure(exc: BaseException) -> bool:
    """A connection error or timeout, raw from requests or wrapped by msrest (ClientRequestError)."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    inner = getattr(exc, "inner_exception", None)
    return isinstance(inner, (requests.ConnectionError, requests.Timeout))


def call_with_retries(
    action: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `action`, retrying transient failures per `policy`; terminal errors propagate at once."""
    started = clock()
    for attempt in range(1, max(1, policy.attempts) + 1):
        try:
            return action()
        except TransientError as exc:
            failure = exc
        except Exception as exc:  # noqa: BLE001 - only network failures are retried; the rest re-raised
            if not _network_failure(exc):
                raise
            failure = TransientError(what, None, None, type(getattr(exc, "inner_exception", None) or exc).__name__)
        if attempt >= policy.attempts:
            raise DevOpsUnavailableError(f"{what} failed {attempt} times; last: {failure.detail}")
        delay = failure.retry_after if failure.retry_after is not None else policy.pause(attempt)
        if clock() - started + delay > policy.budget_s:
            raise DevOpsUnavailableError(
                f"{what} failed ({failure.detail}); the next try would start {delay:.0f} s from now, past the "
                f"{policy.budget_s:.0f} s allowed"
            )
        log.warning("devops call=%r transient=%r retry_in=%.2fs attempt=%d/%d",
                    what, failure.detail, delay, attempt, policy.attempts)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class _GuardedAdapter(HTTPAdapter):
    """No urllib3-level retries (call_with_retries owns them) and our timeouts on every request, including
    the ones the SDK makes on its own (route discovery), whose timeout we cannot otherwise set."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        from orchestrator.devops.hosts import refusal

        # Every request that may carry the token, redirects and the SDK's discovered locations included.
        why = refusal(request.url or "")
        if why is not None:
            raise DevOpsHostError(f"not sent: {describe(request.method or '?', request.url or '')}: {why}")
        kwargs["timeout"] = self._timeout
        _version_in_query(request)
        return super().send(request, *args, **kwargs)


_ACCEPT_VERSION = re.compile(r"api-version=([0-9][0-9A-Za-z.\-]*)")


def _version_in_query(request: requests.PreparedRequest) -> None:
    """The azure-devops SDK negotiates the api-version and sends it only in the Accept header
    (`application/json;api-version=7.1-preview.3`); the REST reference writes it as the `api-version`
    query parameter (docs/devops-protocol.md#test-client.x). DevOps accepts either; we send the same value in both, so a
    server that reads only the query string gets it too."""
    match = _ACCEPT_VERSION.search(str(request.headers.get("Accept", "")))
    if match is None or request.url is None or "api-version=" in request.url:
        return
    separator = "&" if "?" in request.url else "?"
    request.url = f"{request.url}{separator}api-version={match.group(1)}"


def guard_session(session: requests.Session, policy: RetryPolicy) -> requests.Session:
    """Make `session` classify every response with check_response and use the policy's timeouts.

    Idempotent: the SDK calls its credentials' signed_session on every request with the same session.
    """
    if not getattr(session, "_orchestrator_guarded", False):
        adapter = _GuardedAdapter(policy.timeout)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks.setdefault("response", []).append(check_response)
        session._orchestrator_guarded = True  # type: ignore[attr-defined]
    return session


class DevOpsHttp:
    """A requests session for the raw REST calls: Basic auth with an empty user name and the token as
    password (docs/devops-protocol.md#callback-base-and-authentication), JSON in and out, retries per the policy."""

    def __init__(self, token: str, policy: RetryPolicy = DEFAULT_POLICY,
                 session: requests.Session | None = None) -> None:
        self.policy = policy
        self._session = guard_session(session or requests.Session(), policy)
        self._session.auth = ("", token)
        self._session.headers["Accept"] = "application/json"

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        policy: RetryPolicy | None = None,
        retry: bool = True,
    ) -> Any:
        """One call with retries; returns the parsed JSON answer, or None for an empty one.

        retry=False: a single try whose transient failure raises TransientError (or the network error)
        as is, for a caller whose own loop does the retrying.
        """
        headers = {"Content-Type": content_type} if content_type else {}
        what = describe(method, url)

        def once() -> Any:
            response = self._session.request(method, url, params=params, json=json_body, data=data,
                                             headers=headers, timeout=self.policy.timeout)
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                return None

        if not retry:
            return once()
        return call_with_retries(once, policy or self.policy, what)


def utc_iso(moment: datetime | None = None) -> str:
    """ISO 8601 with a Z, as the DevOps APIs write it."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
