"""From a kick_off message to a resolved plan: fetch the repository at the commit, then load its plan with the
message's `only` and `parameters` (docs/architecture.md#plan-file, docs/architecture.md#queue-messages). Shared by the Azure ML and the local kick-off."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.devops.context import DevOpsContext
from orchestrator.errors import InvalidInputError
from orchestrator.plan import ResolvedPlan, load_plan
from orchestrator.trigger.fetch import RepositorySource, check_url, checkout, strip_root
from orchestrator.trigger.messages import KickOff
from orchestrator.trigger.outcome import Refused
from orchestrator.trigger.services import Services


@dataclass(frozen=True)
class Checkout:
    folder: Path          # the repository's working tree (temporary)
    commit: str           # the full commit id checked out
    source: RepositorySource
    plan: ResolvedPlan


def check_source(message: KickOff, services: Services) -> RepositorySource:
    """The repository URL checked against the allow-list: cheap, so done before anything else."""
    try:
        return check_url(message.repository.url, services.settings, allow_local=services.allow_local)
    except InvalidInputError as exc:
        raise Refused("the repository URL is refused", [str(p) for p in exc.problems]) from None


@contextlib.contextmanager
def fetch_plan(message: KickOff, context: DevOpsContext, services: Services,
               source: RepositorySource | None = None) -> Iterator[Checkout]:
    """The checkout and its plan; the checkout is removed when the block ends."""
    source = source or check_source(message, services)
    repo = message.repository
    token = context.token if source.sends_token else None  # the token goes only to Azure Repos hosts
    with contextlib.ExitStack() as stack:
        try:
            folder, sha = stack.enter_context(
                checkout(source, repo.commit, repo.ref, token=token, settings=services.settings,
                         since=message.changed_since))
        except InvalidInputError as exc:  # only the fetch's own refusals: not the caller's errors
            raise Refused(f"the repository {source.shown} cannot be used at commit {repo.commit}",
                          [str(p) for p in exc.problems]) from None
        yield Checkout(folder=folder, commit=sha, source=source, plan=_load(folder, message))


def _load(folder: Path, message: KickOff) -> ResolvedPlan:
    target = folder / message.plan
    try:
        plan = load_plan(target, only=message.only, parameters=message.parameters)
    except InvalidInputError as exc:
        lines = strip_root([str(p) for p in exc.problems], folder)
        raise Refused(f"the plan {message.plan} in the repository is not valid", lines) from None
    if message.changed_since is None:
        return plan
    from orchestrator.changes import apply_selection, select_changed_or_everything

    return apply_selection(plan, select_changed_or_everything(plan, message.changed_since, path=target))
