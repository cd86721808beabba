"""Names Azure ML accepts, made from ours: job names from submission keys, experiment names, and
command-line-safe input values."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

JOB_NAME_PREFIX = "orchestrator"
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_NOT_EXPERIMENT = re.compile(r"[^A-Za-z0-9_\-.]+")
# Characters that cannot sit inside the single quotes of a bash command line, plus `$`: Azure ML reads
# `${{...}}` in an input value as a binding, and `$[[`/`]]` as optional-input brackets.
_UNSAFE = re.compile(r"['$\n\r\x00]|\[\[|\]\]")
JSON_PREFIX = "json:"


def job_name_for_key(key: str) -> str:
    """A deterministic, valid Azure ML job name for a caller's submission key.

    The same key always gives the same name, which is what makes submission idempotent (docs/architecture.md#queue-messages: a
    message delivered twice must not start two pipelines). A readable slug of the key is kept for people
    browsing studio; the hash keeps distinct keys distinct after slugging and truncation.
    """
    if not key:
        raise ValueError("a submission key must not be empty")
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    slug = _NOT_NAME.sub("_", key.lower()).strip("_")[:40].rstrip("_")
    return f"{JOB_NAME_PREFIX}_{slug}_{digest}" if slug else f"{JOB_NAME_PREFIX}_{digest}"


def experiment_name(name: str) -> str:
    """Azure ML experiment names: letters, digits, `_`, `-`, `.`; starting with a letter or digit."""
    cleaned = _NOT_EXPERIMENT.sub("-", name.strip()).strip("-._")[:250]
    return cleaned or "notebooks"


def json_arg(value: Any) -> str:
    """JSON that is safe inside single quotes on a bash command line and free of Azure ML expressions.

    Inside JSON strings, `'`, `$`, `[` and `]` are written as `\\u` escapes (same value after json.loads);
    between tokens, `[[` and `]]` get a space (`[ [`), which JSON allows. So the text holds no `'` (which
    would end the shell quote), no `${{` (a binding to Azure ML) and no `$[[`/`]]` (its optional-input
    brackets), and still decodes with a plain json.loads.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if not _UNSAFE.search(text):
        return text
    out: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            elif char in "'$[]":
                out.append(f"\\u{ord(char):04x}")
                continue
        elif char == '"':
            in_string = True
        elif char in "[]" and out and out[-1] == char:
            out.append(" ")
        out.append(char)
    return "".join(out)


def shell_arg(value: str) -> str:
    """A string input value safe inside single quotes: itself, or `json:` + json_arg when it is not."""
    return value if not _UNSAFE.search(value) else JSON_PREFIX + json_arg(value)


def redact_url(url: str) -> str:
    """A repository URL without credentials: https://user:PAT@host/... leaks a token into job tags."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.netloc or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
