"""What a handler needs from the outside world, gathered in one object the front ends build: settings, the
clock, the scheduler and the secret store (each an overridable seam), the DevOps retry policy, and which
backend runs a kick_off. Tests build one with a controllable clock and fakes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.devops.http import DEFAULT_POLICY, RetryPolicy
from orchestrator.devops.context import Secret
from orchestrator.trigger.scheduling import OutgoingMessage, Scheduler, get_scheduler
from orchestrator.trigger.secret_store import SecretStore, get_secret_store
from orchestrator.trigger.settings import TriggerSettings

BACKENDS = ("azureml", "local")


def utc_clock() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Services:
    settings: TriggerSettings = field(default_factory=TriggerSettings)
    backend: str = "azureml"                 # what runs a kick_off: "azureml" (Function, worker) or "local"
    allow_local: bool = False                # local repositories: `orchestrator handle --allow-local-repos` only
    clock: Callable[[], datetime] = utc_clock
    devops_policy: RetryPolicy = DEFAULT_POLICY
    workspace: Any = None                    # orchestrator.azureml.client.WorkspaceOptions; None: from settings
    out: Path | None = None                  # local backend: the run folder (default .orchestrator/runs/<id>)
    jobs: int | None = None                  # local backend: notebooks at once
    progress: Any = None                     # local backend: an orchestrator.progress.Progress for a terminal
    scheduler: Scheduler | None = None       # None: the factory's (Service Bus scheduled enqueue)
    secrets: SecretStore | None = None       # None: the factory's (Key Vault)
    settings_problem: str | None = None      # the app settings could not be read: every message is refused
    _signing_key: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")

    def get_scheduler(self) -> Scheduler:
        if self.scheduler is None:
            self.scheduler = get_scheduler(self.settings)
        return self.scheduler

    def get_secrets(self) -> SecretStore:
        if self.secrets is None:
            self.secrets = get_secret_store(self.settings)
        return self.secrets

    def signing_key(self) -> Secret:
        """The key of the messages the trigger sends itself (signing.py); read once per Services."""
        if self._signing_key is None:
            from orchestrator.trigger.signing import load_key

            self._signing_key = load_key(self.settings, lambda name: self.get_secrets().get(name))
        return self._signing_key

    def schedule(self, message: OutgoingMessage, at: datetime) -> None:
        """Send `message` to this trigger's queue, signed, to be delivered at `at`."""
        from orchestrator.trigger.signing import sign

        self.get_scheduler().schedule(sign(message, self.signing_key()), at)

    def workspace_options(self) -> Any:
        from orchestrator.azureml.client import WorkspaceOptions

        return self.workspace or WorkspaceOptions(config=self.settings.workspace_config)

    def now(self) -> datetime:
        moment = self.clock()
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
