"""Which hosts may ever be sent an Azure DevOps job token: the one rule, applied in two places that share it.

A server job's collection URL (`PlanUrl`) arrives in a queue message, so anyone allowed to send to the queue
chooses it; an agent job's comes from its environment. Either way the token goes only to an allowed origin:

- https and `dev.azure.com` or any `*.visualstudio.com` host (Azure DevOps Services), always;
- the origins listed in ORCHESTRATOR_DEVOPS_HOSTS (comma-separated), e.g. `https://tfs.example.com` for an
  Azure DevOps Server, or `http://127.0.0.1` for tests and local demonstrations against a loopback server.
  An origin without a port allows any port of that scheme and host; `*.example.com` allows its subdomains.

Where it is applied (docs/devops.md, "Which hosts get the token"):
1. `DevOpsContext` refuses a collection URL outside the list when it is built, so `handle`, `worker`, the
   Function, `report --devops` and `run --devops` stop with a readable reason before any request is made;
2. every HTTP request that carries the token (our raw calls and the azure-devops SDK's, which goes where
   the server's `_apis/ResourceAreas` answer points it, and any redirect) is checked again as it is sent
   (http.guard_session), so no answer from a server can lead the token elsewhere.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from orchestrator.errors import InvalidInputError, Problem

HOSTS_SETTING = "ORCHESTRATOR_DEVOPS_HOSTS"
_SCHEMES = ("https", "http")


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str            # lower case; `*.example.com` matches its subdomains
    port: int | None     # None: any port

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if scheme != self.scheme:
            return False
        name_ok = fnmatch.fnmatchcase(host, self.host) if self.host.startswith("*.") else host == self.host
        return name_ok and (self.port is None or self.port == _effective_port(scheme, port))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port is not None else "")


BUILT_IN = (Origin("https", "dev.azure.com", None), Origin("https", "*.visualstudio.com", None))


class DevOpsHostRefused(InvalidInputError):
    """A DevOps URL outside the allowed origins: nothing was sent to it."""


def _effective_port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def parse_origins(text: str) -> tuple[Origin, ...]:
    """ORCHESTRATOR_DEVOPS_HOSTS's value; ValueError naming the first entry that is not an origin."""
    origins = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            parts = urlsplit(entry)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an origin ({exc})") from None
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
        if scheme not in _SCHEMES or not host or parts.path.strip("/") or parts.query or parts.username:
            raise ValueError(f"{entry!r} is not an origin: expected scheme://host[:port], e.g. https://tfs.example.com")
        origins.append(Origin(scheme, host, port))
    return tuple(origins)


def allowed_origins(environ: Mapping[str, str] | None = None) -> tuple[Origin, ...]:
    environ = os.environ if environ is None else environ
    try:
        extra = parse_origins(environ.get(HOSTS_SETTING, ""))
    except ValueError as exc:
        raise InvalidInputError([Problem("app settings", HOSTS_SETTING, str(exc))]) from None
    return BUILT_IN + extra


def refusal(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why `url` may not be sent a DevOps token, or None when its origin is allowed."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "it is not a valid URL"
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "it is not an absolute http(s) URL"
    origins = allowed_origins(environ)
    if any(origin.matches(scheme, host, port) for origin in origins):
        return None
    shown = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
    return (f"{shown} is not an allowed Azure DevOps origin (allowed: {', '.join(map(str, origins))}; "
            f"add it to {HOSTS_SETTING} if it is your Azure DevOps Server)")


def check_devops_url(url: str, *, where: str, field: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise DevOpsHostRefused (naming `where` and `field`) unless `url`'s origin is allowed."""
    why = refusal(url, environ)
    if why is not None:
        raise DevOpsHostRefused([Problem(where, field, f"refused: {why}")])
