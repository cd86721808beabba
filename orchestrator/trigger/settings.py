"""The trigger's app settings, declared once and read from the environment in this one module
(docs/architecture.md#settings-declared-once). In Azure Functions they are the function app's application settings; for the
worker container and `orchestrator handle`, plain environment variables. docs/trigger.md lists them.

Every setting but one holds a name or a limit, never a secret: the Service Bus connection is given by the NAME
of the setting that holds it (the Functions convention for `connection=`), and the DevOps job token only ever
goes to Key Vault, under a name derived from the job's ids (docs/architecture.md#secrets-policy). The one is ORCHESTRATOR_SIGNING_KEY
(signing.py), held as a `Secret` so that no repr of the settings shows it; in Azure make it a Key Vault
reference, or leave it unset and keep the key in Key Vault under ORCHESTRATOR_SIGNING_KEY_SECRET.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from orchestrator.devops.context import Secret
from orchestrator.errors import InfrastructureError, InvalidInputError, Problem

# Literal names the Function's decorator needs at import time (the binding reads them from app settings).
CONNECTION_SETTING = "ORCHESTRATOR_SERVICEBUS"
QUEUE_SETTING = "ORCHESTRATOR_QUEUE"


class ConfigurationError(InfrastructureError):
    """The trigger is deployed without a setting it needs. Redelivery cannot fix that, so a message that
    needs it is dead-lettered and its DevOps job closed with this text (an operator must act)."""


@dataclass(frozen=True)
class Setting:
    name: str
    attribute: str
    parse: Callable[[str], Any]
    help: str


def _hosts(text: str) -> tuple[str, ...]:
    hosts = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    for host in hosts:
        if "/" in host or ":" in host or " " in host:
            raise ValueError(f"{host!r} is not a host name (no scheme, port or path; `*.example.com` allowed)")
    return hosts


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    return parse


def _identity(text: str) -> str | None:
    value = text.strip().lower()
    if value in ("", "none"):
        return None
    if value not in ("managed", "user"):
        raise ValueError("expected managed, user or none")
    return value


def _text(text: str) -> str | None:
    return text.strip() or None


@dataclass(frozen=True)
class TriggerSettings:
    # Where repositories may come from (docs/architecture.md#queue-messages). Exact names or `*.suffix`; https only.
    allowed_hosts: tuple[str, ...] = ("dev.azure.com", "*.visualstudio.com")
    # Azure Repos hosts: only these are sent the job token when fetching (never an allow-listed third party).
    token_hosts: tuple[str, ...] = ("dev.azure.com", "*.visualstudio.com")
    queue_name: str = "orchestrator"
    connection_setting: str = CONNECTION_SETTING
    key_vault_url: str | None = None
    workspace_config: Path | None = None
    report_identity: str | None = "managed"
    max_body_bytes: int = 64 * 1024
    max_deliveries: int = 5
    redelivery_delay_s: float = 30.0
    fetch_timeout_s: float = 300.0
    max_repository_bytes: int = 1024 ** 3
    watchdog_interval_s: float = 600.0
    watchdog_max_age_s: float = 73 * 3600.0
    submit_grace_s: float = 1800.0
    lock_renewal_s: float = 3600.0
    work_dir: Path | None = None
    snapshot_dir: Path | None = None
    state_dir: Path = Path(".orchestrator") / "trigger"
    signing_key: Secret | None = None
    signing_key_secret: str = "orchestrator-signing-key"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TriggerSettings:
        """The settings in `environ` (default: os.environ); every malformed one reported at once."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for setting in SETTINGS:
            raw = environ.get(setting.name)
            if raw is None or not raw.strip():
                continue
            try:
                values[setting.attribute] = setting.parse(raw.strip())
            except ValueError as exc:
                problems.append(Problem("app settings", setting.name, str(exc)))
        if problems:
            raise InvalidInputError(problems)
        return cls(**values)

    def host_allowed(self, host: str) -> bool:
        return _matches(host, self.allowed_hosts)

    def sends_token_to(self, host: str) -> bool:
        return _matches(host, self.token_hosts)

    def require_key_vault(self) -> str:
        if not self.key_vault_url:
            raise ConfigurationError(
                "the trigger is not configured: ORCHESTRATOR_KEY_VAULT_URL is not set, so the pipeline's report "
                "step could not read the DevOps job token (docs/architecture.md#secrets-policy); an operator must set it")
        return self.key_vault_url


def _matches(host: str, patterns: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern) if pattern.startswith("*.") else host == pattern
               for pattern in patterns)


SETTINGS: tuple[Setting, ...] = (
    Setting("ORCHESTRATOR_ALLOWED_HOSTS", "allowed_hosts", _hosts,
            "Comma-separated hosts repositories may be fetched from (https only; `*.example.com` allowed)."),
    Setting("ORCHESTRATOR_TOKEN_HOSTS", "token_hosts", _hosts,
            "Hosts (Azure Repos) that are sent the DevOps job token when fetching."),
    Setting(QUEUE_SETTING, "queue_name", str, "The Service Bus queue (the Function reads it as %ORCHESTRATOR_QUEUE%)."),
    Setting("ORCHESTRATOR_CONNECTION_SETTING", "connection_setting", str,
            "Worker only: the NAME of the setting holding the Service Bus connection."),
    Setting("ORCHESTRATOR_KEY_VAULT_URL", "key_vault_url", _text,
            "The Key Vault where the DevOps job token is put for the report step (required for Azure ML)."),
    Setting("ORCHESTRATOR_WORKSPACE_CONFIG", "workspace_config", Path,
            "An Azure ML config.json (else the AZUREML_* / AZURE_* variables of docs/azureml.md)."),
    Setting("ORCHESTRATOR_REPORT_IDENTITY", "report_identity", _identity,
            "Identity of the report node for Key Vault: managed (default), user or none."),
    Setting("ORCHESTRATOR_MAX_BODY_BYTES", "max_body_bytes", _positive(int), "Largest message body accepted."),
    Setting("ORCHESTRATOR_MAX_DELIVERIES", "max_deliveries", _positive(int),
            "Deliveries of one message before a transient failure is final (keep below the queue's maxDeliveryCount)."),
    Setting("ORCHESTRATOR_REDELIVERY_DELAY_S", "redelivery_delay_s", _positive(float),
            "Delay before a failed kick_off is delivered again; doubled at each failure (at most 1 h)."),
    Setting("ORCHESTRATOR_FETCH_TIMEOUT_S", "fetch_timeout_s", _positive(float), "Time limit of one repository fetch."),
    Setting("ORCHESTRATOR_MAX_REPOSITORY_BYTES", "max_repository_bytes", _positive(int),
            "Size limit of a fetched repository (history and checkout)."),
    Setting("ORCHESTRATOR_WATCHDOG_INTERVAL_S", "watchdog_interval_s", _positive(float), "Time between wrap_up checks."),
    Setting("ORCHESTRATOR_WATCHDOG_MAX_AGE_S", "watchdog_max_age_s", _positive(float),
            "Age after which the watchdog closes the DevOps job and stops (server tasks wait 72 h at most)."),
    Setting("ORCHESTRATOR_SUBMIT_GRACE_S", "submit_grace_s", _positive(float),
            "How long a wrap_up waits for a pipeline that does not exist yet."),
    Setting("ORCHESTRATOR_LOCK_RENEWAL_S", "lock_renewal_s", _positive(float),
            "Worker only: how long the message lock is renewed while one message is handled."),
    Setting("ORCHESTRATOR_WORK_DIR", "work_dir", Path, "Where repositories are fetched (default: the temp folder)."),
    Setting("ORCHESTRATOR_SNAPSHOT_DIR", "snapshot_dir", Path,
            "Where pipeline code snapshots are staged (default: beside the fetch, removed after submission)."),
    Setting("ORCHESTRATOR_STATE_DIR", "state_dir", Path,
            "Local backend only: where duplicate-delivery markers are kept."),
    Setting("ORCHESTRATOR_SIGNING_KEY", "signing_key", Secret,
            "The key that signs the messages the trigger sends itself (a Key Vault reference in Azure)."),
    Setting("ORCHESTRATOR_SIGNING_KEY_SECRET", "signing_key_secret", str,
            "Without ORCHESTRATOR_SIGNING_KEY: the Key Vault secret holding that key."),
)

# Settings without which a deployment cannot work, each as (what to show, the names any one of which will do).
# ORCHESTRATOR_QUEUE has a default for the worker, but the Function's binding reads `%ORCHESTRATOR_QUEUE%`
# through the host, which knows no default: unset, the function does not start at all.
REQUIRED: tuple[tuple[str, tuple[str, ...]], ...] = (
    (CONNECTION_SETTING, (CONNECTION_SETTING, f"{CONNECTION_SETTING}__fullyQualifiedNamespace")),
    (QUEUE_SETTING, (QUEUE_SETTING,)),
    ("ORCHESTRATOR_KEY_VAULT_URL", ("ORCHESTRATOR_KEY_VAULT_URL",)),
    ("ORCHESTRATOR_SIGNING_KEY (or the Key Vault secret ORCHESTRATOR_SIGNING_KEY_SECRET)",
     ("ORCHESTRATOR_SIGNING_KEY", "ORCHESTRATOR_KEY_VAULT_URL")),
    ("the Azure ML workspace (AZUREML_ARM_SUBSCRIPTION, AZUREML_ARM_RESOURCEGROUP, AZUREML_ARM_WORKSPACE_NAME, or "
     "ORCHESTRATOR_WORKSPACE_CONFIG)", ("AZUREML_ARM_WORKSPACE_NAME", "ORCHESTRATOR_WORKSPACE_CONFIG")),
)


def missing_required(environ: Mapping[str, str] | None = None, *, workspace_given: bool = False) -> list[str]:
    """The required settings (docs/trigger.md, "App settings") that `environ` lacks, by name.
    workspace_given: the workspace came from command-line options instead."""
    environ = os.environ if environ is None else environ
    required = REQUIRED[:-1] if workspace_given else REQUIRED
    return [shown for shown, names in required if not any(str(environ.get(name) or "").strip() for name in names)]


def startup_line(component: str, environ: Mapping[str, str] | None = None, *,
                 workspace_given: bool = False) -> tuple[bool, str]:
    """(all present, the one line a front end logs when it starts)."""
    missing = missing_required(environ, workspace_given=workspace_given)
    if not missing:
        return True, f"{component} starting: every required app setting is set"
    return False, (f"{component} starting WITHOUT required app settings: {'; '.join(missing)}. Messages will be "
                   "refused (or, without the queue or connection, never received) until they are set; see "
                   "docs/trigger.md, App settings")


assert {s.attribute for s in SETTINGS} == {f.name for f in fields(TriggerSettings)}, "every setting declared once"
