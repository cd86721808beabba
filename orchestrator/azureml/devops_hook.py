"""The report node's hook into Azure DevOps publishing (docs/architecture.md#ways-in, ways in 1 and 2; docs/architecture.md#secrets-policy).

The pipeline carries DevOps *settings* only: the callback's routing properties (PlanUrl, PlanId, JobId, ...)
and the NAME of a Key Vault secret holding the token, never a token. The report node reads the secret at
run time, in its own process, and hands `orchestrator.devops` a getter; the value never reaches an input,
an environment variable, a command line or a log.

Publishing is best effort: it runs after the report is written, and a failure is logged, never raised.
That is what keeps a rerun from studio safe: the rerun's report node calls back a server job that the
first run already closed (or whose token expired), DevOps refuses, the warning is logged, and the rerun's
report stands (docs/azureml.md, "Reruns and the DevOps callback").
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

from orchestrator.errors import InvalidInputError, Problem

log = logging.getLogger("orchestrator.azureml")

HOOK_MODULE = "orchestrator.devops"
# An override the DevOps package may define: (run_dir: Path, config: dict, get_secret: Callable[[str], str]).
# Without it, `_report_to_devops` below uses orchestrator.devops' DevOpsContext and report_to_devops.
HOOK_FUNCTION = "publish_from_azureml"
KEY_VAULT_URL = "key_vault_url"
TOKEN_SECRET = "token_secret"  # the NAME of the Key Vault secret holding the DevOps token
IDENTITY = "identity"  # the report node's identity for Key Vault: "user", "managed", or absent (the job's)
PROPERTIES = "properties"  # the server job's Service Bus application properties, without AuthToken
BODY = "body"  # the kick_off message body (build, repository), for the test run's fields
# Keys that would carry a secret value; refused so that nobody passes the token itself by mistake.
USER_ASSIGNED_CLIENT_ID = "DEFAULT_IDENTITY_CLIENT_ID"
_SECRET_KEYS = frozenset({"authtoken", "accesstoken", "system_accesstoken", "token", "pat", "password",
                          "client_secret", "secret"})


def check_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The DevOps settings, refused if any key, at any depth, would carry a secret value (docs/architecture.md#secrets-policy).

    Shape: {"key_vault_url": ..., "token_secret": NAME, "properties": {PlanUrl, ProjectId, HubName, PlanId,
    JobId, TimelineId, TaskInstanceId, ...}, "body": {build, repository}} for a server job waiting for its
    callback; {"key_vault_url", "token_secret", "collection_url", "project", "build_id"} to publish a test
    run only (a schedule).
    """
    problems: list[Problem] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                path = f"{where}.{key}" if where else str(key)
                if str(key).lower().replace("-", "_") in _SECRET_KEYS:
                    problems.append(Problem("devops settings", path, "a secret value must not enter the pipeline; "
                                            f"pass the Key Vault secret's name as {TOKEN_SECRET!r} instead"))
                else:
                    walk(value, path)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")
        elif not isinstance(node, (str, int, float, bool, type(None))):
            problems.append(Problem("devops settings", where, "expected JSON values"))

    walk(config, "")
    if problems:
        raise InvalidInputError(problems)
    return dict(config)


def report_credential(identity: str | None, environ: Mapping[str, str] | None = None) -> Any:
    """The credential the report node reads Key Vault with, for the identity it was compiled with:

    - "user" (UserIdentityConfiguration): the submitting user's identity is reached on behalf of the user with
      `AzureMLOnBehalfOfCredential` (azure.ai.ml.identity); DefaultAzureCredential cannot get it. Azure ML
      offers it on compute clusters only, which compile checks;
    - "managed" (ManagedIdentityConfiguration): the compute's managed identity; a user-assigned one is named by
      DEFAULT_IDENTITY_CLIENT_ID, which Azure ML sets on the compute and DefaultAzureCredential does not read;
    - None: DefaultAzureCredential, whatever the job's environment provides.
    """
    import os

    environ = os.environ if environ is None else environ
    if identity == "user":
        from azure.ai.ml.identity import AzureMLOnBehalfOfCredential

        return AzureMLOnBehalfOfCredential()
    if identity == "managed":
        from azure.identity import ManagedIdentityCredential

        client_id = environ.get(USER_ASSIGNED_CLIENT_ID) or None  # None: the system-assigned identity
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def key_vault_getter(vault_url: str, identity: str | None = None) -> Callable[[str], str]:
    """A function reading a secret by name from Key Vault with the report node's identity."""

    def get_secret(name: str) -> str:
        from azure.keyvault.secrets import SecretClient

        value = SecretClient(vault_url=vault_url, credential=report_credential(identity)).get_secret(name).value
        if value is None:
            raise LookupError(f"Key Vault secret {name!r} has no value")
        return str(value)

    return get_secret


def publish(run_dir: Path, config: Mapping[str, Any] | None) -> str:
    """Publish the run folder to DevOps through orchestrator.devops, when it is there and configured.

    Returns what happened, in words, for the log; never raises.
    """
    if not config:
        return "DevOps publishing not configured"
    try:
        module = importlib.import_module(HOOK_MODULE)
    except ImportError as exc:
        return f"DevOps publishing configured but {HOOK_MODULE} is not importable ({exc})"
    hook = getattr(module, HOOK_FUNCTION, None) or _report_to_devops
    vault = config.get(KEY_VAULT_URL)

    def no_vault(name: str) -> str:
        raise LookupError(f"secret {name!r} requested but the DevOps settings name no {KEY_VAULT_URL}")

    identity = config.get(IDENTITY)
    getter = key_vault_getter(str(vault), str(identity) if identity else None) if vault else no_vault
    try:
        hook(run_dir, dict(config), getter)
    except Exception as exc:  # noqa: BLE001 - best effort by design: the report must stand (see module doc)
        log.warning("DevOps publishing failed; the report is unaffected: %s: %s", type(exc).__name__, exc)
        return f"DevOps publishing failed: {type(exc).__name__}"
    return "published to DevOps"


def _report_to_devops(run_dir: Path, config: Mapping[str, Any], get_secret: Callable[[str], str]) -> None:
    """Publish with orchestrator.devops: the test run, then TaskCompleted when a server job waits."""
    from orchestrator.devops import report_to_devops

    report_to_devops(run_dir, context_for(config, get_secret))


def context_for(config: Mapping[str, Any], get_secret: Callable[[str], str]) -> Any:
    """The DevOpsContext the settings route to, its token read by name with `get_secret` (the report node and
    the Event Grid backstop, orchestrator/azureml/backstop.py, read it the same way)."""
    from orchestrator.devops import DevOpsContext

    name = config.get(TOKEN_SECRET)
    if not name:
        raise LookupError(f"the DevOps settings name no {TOKEN_SECRET}")
    token = get_secret(str(name))
    properties = config.get(PROPERTIES)
    if properties:
        return DevOpsContext.from_properties({**properties, "AuthToken": token}, config.get(BODY) or {},
                                             where="devops settings")
    return DevOpsContext.from_options(collection_url=str(config.get("collection_url") or ""),
                                      project=str(config.get("project") or ""), token=token,
                                      build_id=config.get("build_id"))
