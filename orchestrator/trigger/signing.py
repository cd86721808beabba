"""Messages the trigger sends to itself are signed, and only signed ones are believed (docs/trigger.md,
"Messages the trigger sends itself").

Anyone with Send on the queue can write a message. A kick_off from DevOps carries its own job token, so a
forged one can only spend the token its sender already had. But a `wrap_up` (and a kick_off the trigger
rescheduled, which carries no token) makes the trigger read a token from Key Vault, call DevOps with it and
cancel or collect an Azure ML job: such a message is acted on only when it carries an HMAC-SHA256 signature,
made with a key only the trigger holds, over its exact body bytes and every application property (the
routing properties decide which job is touched and where the token goes). Anything unsigned or altered is
dead-lettered with the reason, before any secret is read or any job looked at.

The key: the app setting ORCHESTRATOR_SIGNING_KEY (in Azure, a Key Vault reference), else the Key Vault
secret named by ORCHESTRATOR_SIGNING_KEY_SECRET in ORCHESTRATOR_KEY_VAULT_URL. Every instance must use the
same key, so none is made up here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from orchestrator.devops.context import Secret
from orchestrator.trigger.scheduling import OutgoingMessage
from orchestrator.trigger.settings import ConfigurationError, TriggerSettings

SIGNATURE_PROPERTY = "OrchestratorSignature"
_VERSION = "v1"
MIN_KEY_CHARS = 32


def _digest(key: Secret, body: bytes, properties: Mapping[str, Any]) -> str:
    # Canonical: the body's bytes as sent, then the properties sorted by name, as JSON; the signature excluded.
    fields = sorted((str(k), str(v)) for k, v in properties.items() if str(k) != SIGNATURE_PROPERTY)
    material = body + b"\n" + json.dumps(fields, separators=(",", ":")).encode("utf-8")
    return hmac.new(key.reveal().encode("utf-8"), material, hashlib.sha256).hexdigest()


def sign(message: OutgoingMessage, key: Secret) -> OutgoingMessage:
    """`message` with its signature property added."""
    signature = f"{_VERSION}={_digest(key, message.body_bytes, message.properties)}"
    return replace(message, properties={**message.properties, SIGNATURE_PROPERTY: signature})


def verify(body: bytes, properties: Mapping[str, Any], key: Secret) -> str | None:
    """None when the message was signed with `key`; else why it is not believed (one line, for a person)."""
    given = str(properties.get(SIGNATURE_PROPERTY) or "").strip()
    if not given:
        return (f"it carries no {SIGNATURE_PROPERTY} property: only the trigger itself sends this kind of message, "
                "and it signs each one")
    expected = f"{_VERSION}={_digest(key, body, properties)}"
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return (f"its {SIGNATURE_PROPERTY} does not match its body and properties: it was altered, or signed with "
                "another key")
    return None


def load_key(settings: TriggerSettings, read_secret: Callable[[str], str | None]) -> Secret:
    """The signing key (from the app setting, else from Key Vault); ConfigurationError saying how to set it."""
    key = settings.signing_key
    if key is None:
        name = settings.signing_key_secret
        value = read_secret(name) if settings.key_vault_url else None
        if not value:
            raise ConfigurationError(
                "the trigger is not configured: no key to sign the messages it sends itself; set "
                f"ORCHESTRATOR_SIGNING_KEY (a Key Vault reference), or create the secret {name!r} in "
                "ORCHESTRATOR_KEY_VAULT_URL, e.g. with `openssl rand -hex 32` (docs/trigger.md)")
        key = Secret(value)
    if len(key.reveal()) < MIN_KEY_CHARS:
        raise ConfigurationError(f"the trigger's signing key is shorter than {MIN_KEY_CHARS} characters; use "
                                 "`openssl rand -hex 32`")
    return key
