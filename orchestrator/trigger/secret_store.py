"""Where the DevOps job token waits for the pipeline's report step: Key Vault, by a secret NAME derived from
the job's ids (docs/architecture.md#secrets-policy; orchestrator/azureml/devops_hook.py reads it there with the node's identity).

The store is a seam (docs/architecture.md#one-client-factory): production uses Key Vault with DefaultAzureCredential (the
function app's managed identity needs `set` and `get` on secrets); tests install a fake with
`set_secret_store_factory`. Nothing here logs a value.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from orchestrator.errors import MissingExtraError
from orchestrator.seam import Seam
from orchestrator.trigger.settings import TriggerSettings

log = logging.getLogger("orchestrator.trigger")

SECRET_PREFIX = "devops-job-token-"
CONTENT_TYPE = "azure-devops-job-token"


class SecretStore(Protocol):
    def put(self, name: str, value: str, *, expires_on: datetime) -> None: ...

    def get(self, name: str) -> str | None: ...

    def delete(self, name: str) -> None: ...


def secret_name_for(key: str) -> str:
    """A Key Vault secret name (1-127 of [0-9a-zA-Z-]) for a dedupe key: the same job, the same name, so a
    redelivered kick_off overwrites (a new version of) the same secret instead of adding another."""
    return SECRET_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


class KeyVaultSecretStore:
    def __init__(self, vault_url: str) -> None:
        self.vault_url = vault_url

    def _client(self) -> object:
        try:
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient
        except ImportError:
            raise MissingExtraError("azure-keyvault-secrets", "trigger") from None
        return SecretClient(vault_url=self.vault_url, credential=DefaultAzureCredential())

    def put(self, name: str, value: str, *, expires_on: datetime) -> None:
        client = self._client()
        # expires_on is a label for people and policies: Key Vault still serves an expired secret's value
        # (Azure/AzureKeyVault#19). What ends the token's stay is `delete`, once its job is closed (watchdog).
        client.set_secret(name, value, expires_on=expires_on, content_type=CONTENT_TYPE)  # type: ignore[attr-defined]
        log.info("devops token stored secret=%s vault=%s expires=%s", name, self.vault_url, expires_on.isoformat())

    def get(self, name: str) -> str | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            value = self._client().get_secret(name).value  # type: ignore[attr-defined]
        except ResourceNotFoundError:
            return None
        return str(value) if value is not None else None


    def delete(self, name: str) -> None:
        """Delete the secret; purge it too when the identity may (a soft-deleted value stays recoverable until
        then). Absent already: nothing to do."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        client: Any = self._client()
        try:
            client.begin_delete_secret(name).wait()
        except ResourceNotFoundError:
            return
        try:
            client.purge_deleted_secret(name)
        except HttpResponseError as exc:  # no purge permission, or purge protection: soft-deleted it stays
            log.info("devops token secret=%s deleted, not purged (%s)", name, exc.reason or exc.status_code)
            return
        log.info("devops token secret=%s deleted and purged vault=%s", name, self.vault_url)


SecretStoreFactory = Callable[[TriggerSettings], SecretStore]


def default_factory(settings: TriggerSettings) -> SecretStore:
    return KeyVaultSecretStore(settings.require_key_vault())


_seam: Seam[SecretStoreFactory] = Seam(default_factory)


def set_secret_store_factory(factory: SecretStoreFactory | None) -> SecretStoreFactory:
    """Replace the factory (tests: a fake); None restores Key Vault. Returns the previous one."""
    return _seam.replace(factory)


def get_secret_store(settings: TriggerSettings) -> SecretStore:
    return _seam.factory(settings)
