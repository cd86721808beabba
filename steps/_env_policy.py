"""Which environment variables a notebook kernel may see: the one place for that rule (docs/isolation.md).

A kernel gets the orchestrator's environment minus everything that looks like a credential:

- the orchestrator's own credentials, which no plan can pass through (`ORCHESTRATOR_ONLY`): the DevOps job
  token and PATs, the Azure identity of the process (service principal secret or certificate, managed identity
  endpoint and header, federated token file), the Service Bus connection of the trigger (and the setting
  ORCHESTRATOR_CONNECTION_SETTING names), and every ORCHESTRATOR_* setting that looks secret;
- names that look secret (a part such as TOKEN, SECRET, PASSWORD, KEY, CREDENTIAL(S), SAS, a connection
  string), Service Bus, Key Vault and Azure Functions host variables;
- values that look secret whatever their name: connection strings with an account or shared access key, SAS
  signatures, URLs with a password, private keys, JSON web tokens;
- the plan's `secret_env`.

A plan's `pass_env` lets named variables of the second and third kind through (a notebook that needs its own
HF_TOKEN, say); never the orchestrator's own credentials, never a `secret_env` name. Only names are ever logged.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The orchestrator's own credentials. Exact names (upper case) and prefixes.
_OWN_NAMES = frozenset({
    # Azure DevOps: the job token (mapped by the pipeline), PATs of the az devops extension and of this tool.
    "SYSTEM_ACCESSTOKEN", "AZURE_DEVOPS_EXT_PAT", "ORCHESTRATOR_DEVOPS_TOKEN",
    # azure-identity's EnvironmentCredential, WorkloadIdentityCredential and ManagedIdentityCredential.
    "AZURE_CLIENT_SECRET", "AZURE_PASSWORD", "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
    "MSI_ENDPOINT", "MSI_SECRET",
    # The trigger's Service Bus connection (orchestrator/trigger/settings.py: CONNECTION_SETTING).
    "ORCHESTRATOR_SERVICEBUS",
})
_OWN_PREFIXES = ("AZURE_CLIENT_CERTIFICATE_", "IDENTITY_", "MSI_", "ORCHESTRATOR_SERVICEBUS")
# The trigger setting holding the NAME of the variable that holds the Service Bus connection.
CONNECTION_SETTING_NAME = "ORCHESTRATOR_CONNECTION_SETTING"

# A name is split into parts at _ - . and case changes are ignored; a part equal to (or, for the compound
# ones, ending with) one of these marks it secret. Parts, not substrings: TOKENIZERS_PARALLELISM and
# KEYRING_BACKEND are harmless, HF_TOKEN, NPM_AUTHTOKEN and AWS_SECRET_ACCESS_KEY are not. No CERT: SSL_CERT_FILE
# names the CA bundle HTTPS needs behind a corporate proxy (the client certificate variables are listed above).
_SECRET_PARTS = frozenset({
    "TOKEN", "TOKENS", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASSPHRASE", "KEY", "KEYS", "CREDENTIAL",
    "CREDENTIALS", "CREDS", "SAS", "CONNSTR", "CONNECTIONSTRING", "PAT", "PRIVATE",
    "AUTH", "COOKIE", "SIGNATURE",
})
_SECRET_ENDINGS = ("TOKEN", "SECRET", "PASSWORD", "APIKEY", "ACCESSKEY", "PRIVATEKEY", "CONNECTIONSTRING")
_SECRET_PAIRS = (("CONNECTION", "STRING"), ("ACCESS", "KEY"), ("API", "KEY"), ("SHARED", "ACCESS"))
# Service Bus, Key Vault and the Azure Functions host (AzureWebJobsStorage is a storage connection string).
_SERVICE_MARKS = ("SERVICEBUS", "KEYVAULT", "KEY_VAULT", "AZUREWEBJOBS")

_SECRET_VALUES = (
    re.compile(r"(?i)(AccountKey|SharedAccessKey|SharedAccessSignature|Password|Pwd)\s*=\s*[^;\s]"),
    re.compile(r"(?i)[?&]sig=[^&\s]{16,}"),  # a SAS URL
    re.compile(r"(?i)^[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@"),  # a URL with user:password@
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # a JSON web token
)


def _parts(name: str) -> list[str]:
    return [part for part in re.split(r"[_\-.]+", name.upper()) if part]


def is_orchestrator_credential(name: str, environ: Mapping[str, str] = {}) -> bool:
    """True for the orchestrator's own credentials, which no plan can pass to a notebook."""
    upper = name.upper()
    if upper in _OWN_NAMES or upper.startswith(_OWN_PREFIXES):
        return True
    if upper.startswith("ORCHESTRATOR_") and looks_secret(name):
        return True
    connection = environ.get(CONNECTION_SETTING_NAME, "").strip()
    return bool(connection) and upper == connection.upper()


# Both checks are pure functions of a string, asked again for every variable at every kernel start of a run (about
# 2 ms per kernel on the shared 2-core VM): answered once per string. The strings are this process's own environment.
@functools.lru_cache(maxsize=4096)
def looks_secret(name: str) -> bool:
    """True for a name that announces a credential, or a Service Bus / Key Vault / Functions host variable."""
    upper = name.upper()
    if any(mark in upper.replace("-", "_") for mark in _SERVICE_MARKS):
        return True
    parts = _parts(name)
    if any(part in _SECRET_PARTS or part.endswith(_SECRET_ENDINGS) for part in parts):
        return True
    return any(pair == (a, b) for pair in _SECRET_PAIRS for a, b in zip(parts, parts[1:]))


@functools.lru_cache(maxsize=4096)
def value_looks_secret(value: str) -> bool:
    return any(pattern.search(value) for pattern in _SECRET_VALUES)


@dataclass(frozen=True)
class EnvPolicy:
    """The plan's part of the rule: `withheld` (secret_env) never passed, `passed` (pass_env) let through."""

    withheld: frozenset[str] = frozenset()
    passed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, secret_env: Iterable[str] = (), pass_env: Iterable[str] = ()) -> EnvPolicy:
        return cls(withheld=frozenset(secret_env), passed=frozenset(pass_env))

    def removes(self, name: str, value: str, environ: Mapping[str, str]) -> bool:
        if name in self.withheld or is_orchestrator_credential(name, environ):
            return True
        if name in self.passed:
            return False
        return looks_secret(name) or value_looks_secret(value)

    def apply(self, env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
        """(the environment a kernel gets, the names removed from `env`)."""
        kept: dict[str, str] = {}
        removed: list[str] = []
        for name, value in env.items():
            if self.removes(name, value, env):
                removed.append(name)
            else:
                kept[name] = value
        return kept, sorted(removed)


def kernel_environment(
    base: Mapping[str, str],
    *,
    extra: Mapping[str, str] = {},
    pythonpath: Sequence[Path] = (),
    policy: EnvPolicy = EnvPolicy(),
) -> tuple[dict[str, str], list[str]]:
    """(the kernel's environment, the names withheld): ours plus `extra`, with `pythonpath` first on
    PYTHONPATH, minus whatever the secret policy above removes.

    The policy applies last so that nothing (not even `extra`) can pass a secret to a notebook.
    """
    env = dict(base)
    env.update(extra)
    if pythonpath:
        existing = [part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part]
        env["PYTHONPATH"] = os.pathsep.join([str(Path(p).resolve()) for p in pythonpath] + existing)
    # debugpy (imported by ipykernel) warns about frozen modules on every start; the warning is noise in
    # kernel.log, not something a notebook author can act on.
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return policy.apply(env)
