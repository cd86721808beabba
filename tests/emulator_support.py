"""The emulated Azure ML workspace in tests: a tiny repository with one notebook per outcome, compiled once,
and a helper that runs a compiled job in a workspace and follows it the way `run --wait` does."""

from __future__ import annotations

import json
from pathlib import Path
import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from tests.builders import make_notebook

# One notebook per outcome the report must keep apart. Kernels are real; each notebook is a cell or two.
PLAN = """\
version: 1
experiment: emulated
defaults: {retries: 0}
notebooks:
  - glob: "*.ipynb"
  - path: e_error.ipynb
    kernel: no-such-kernel
  - path: c_timeout.ipynb
    timeout: 1.5s
  - path: f_after_failed.ipynb
    after: [b_fail.ipynb]
  - path: g_skipped.ipynb
    skip: not ready
"""
NOTEBOOKS = {
    "a_pass.ipynb": "x = 1",
    "b_fail.ipynb": "raise ValueError('broken on purpose')",
    "c_timeout.ipynb": "import time\ntime.sleep(30)",
    "d_crash.ipynb": "import os\nos._exit(1)",
    "e_error.ipynb": "x = 1",
    "f_after_failed.ipynb": "x = 1",
    "g_skipped.ipynb": "x = 1",
}
# Seconds the report node waits for runs it cannot see yet (ORCHESTRATOR_DISCOVERY_SETTLE_S): short here,
# the emulated search lag is shorter still.
SETTLE_S = "4"
SEARCH_LAG_S = 1.5


def outcome_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "orchestrator.yml").write_text(PLAN, encoding="utf-8")
    for name, source in NOTEBOOKS.items():
        make_notebook(root / name, source)
    return root


def compiled(repo: Path, out: Path, *, run_key: str = "matrix") -> Any:
    """The plan compiled and written like `orchestrator compile --out`, and read back with load_job."""
    from azure.ai.ml import load_job

    from orchestrator.azureml.compile import CompileOptions, compile_plan
    from orchestrator.azureml.export import write_pipeline
    from orchestrator.plan import load_plan

    job = compile_plan(load_plan(repo), CompileOptions(run_key=run_key, cache_dir=out.parent / "snapshots"))
    write_pipeline(job, out, source="test")
    return load_job(out)


def statuses(results: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Notebook -> (status, error kind): what must agree between backends and under every assumption."""
    return {s["notebook"]: (s["status"], (s.get("error") or {}).get("kind")) for s in results["steps"]}


def follow_job(workspace: Any, job: Any, run_dir: Path, *, key: str) -> dict[str, Any]:
    """Submit `job` and follow it to the end as `run --wait` does; the run folder's results.json."""
    from orchestrator.azureml.backend import follow
    from orchestrator.azureml.rerun import expected_of
    from orchestrator.azureml.submit import submit_job
    from orchestrator.backends import RunOptions
    from orchestrator.progress import PlainProgress

    expected = expected_of(job)
    submitted = submit_job(workspace, job, key=key)
    follow(workspace, submitted, options=RunOptions(run_dir=run_dir, run_id=key, wait=True),
           progress=PlainProgress(), expected=expected, title="emulated", run_key="matrix", poll_s=0.1)
    data: dict[str, Any] = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture
def emulated_client(tmp_path: Path) -> Iterator[Any]:
    """An emulated workspace at the client seam for one test."""
    from orchestrator.azureml.client import set_client_factory
    from orchestrator.azureml.emulator import EmulatedWorkspace

    workspace = EmulatedWorkspace(tmp_path / "workspace", node_environment={"ORCHESTRATOR_DISCOVERY_SETTLE_S": SETTLE_S})
    previous = set_client_factory(workspace.factory)
    yield workspace
    set_client_factory(previous)
    workspace.close()


@dataclass
class KickedOff:
    """A DevOps server job's pipeline, submitted by the trigger's kick_off and finished in the emulated workspace
    with its report node never running (finalize-never): what the watchdog and the Event Grid backstop cover."""

    workspace: Any  # EmulatedWorkspace
    services: Any  # orchestrator.trigger.services.Services
    clock: Any  # tests.trigger_support.Clock
    scheduler: Any  # tests.trigger_support.FakeScheduler
    name: str  # the pipeline job

    def watchdog(self) -> Any:
        """The next wrap_up check, due once the watchdog's interval has passed: its Outcome."""
        from orchestrator.trigger.handlers import handle

        self.clock.advance(600.0)
        [check] = self.scheduler.due(self.clock.now)
        return handle(check, self.services)


@contextlib.contextmanager
def kicked_off_without_report_node(tmp_path: Path, properties: dict[str, Any]) -> Iterator[KickedOff]:
    """Notebook a passes, b fails; the emulated workspace is at the client seam until the block ends."""
    from orchestrator.azureml.client import set_client_factory
    from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace
    from orchestrator.trigger.handlers import handle
    from tests.trigger_support import Clock, FakeScheduler, FakeSecrets, kick_off_body, make_services, notebook_repo, raw

    workspace = EmulatedWorkspace(tmp_path / "workspace", assumptions=Assumptions(finalize_never=True),
                                  node_environment={"ORCHESTRATOR_DISCOVERY_SETTLE_S": SETTLE_S})
    previous = set_client_factory(workspace.factory)
    try:
        repo, commit = notebook_repo(tmp_path / "repo", {"nb/a.ipynb": "x = 1", "nb/b.ipynb": "raise ValueError('x')"},
                                     "version: 1\nexperiment: watched\ndefaults: {retries: 0}\n"
                                     "notebooks:\n  - glob: 'nb/*.ipynb'\n")
        clock, scheduler = Clock(), FakeScheduler()
        services = make_services(tmp_path, clock=clock, scheduler=scheduler, secrets=FakeSecrets(),
                                 watchdog_interval_s=600.0)
        outcome = handle(raw(kick_off_body(str(repo.bare), commit), properties), services)
        assert outcome.action == "complete", outcome
        [name] = list(workspace.states)
        assert workspace.wait(name, timeout=300) == "Failed"  # b failed; no report node ran
        yield KickedOff(workspace, services, clock, scheduler, name)
    finally:
        set_client_factory(previous)
        workspace.close()


NIGHTLY_AT = "2026-01-31T02:00:00Z"


def scheduled_run(workspace: Any, repo: Path, snapshots: Path) -> str:
    """`orchestrator schedule REPO --name nightly` into `workspace` (at the client seam), fired at NIGHTLY_AT
    and waited for: the name of the job it ran."""
    from datetime import datetime

    from click.testing import CliRunner

    from orchestrator.cli import cli

    done = CliRunner().invoke(cli, ["schedule", str(repo), "--cron", "0 2 * * *", "--name", "nightly",
                                    "--snapshots", str(snapshots), "--subscription", "s",
                                    "--resource-group", "r", "--workspace", "w"])
    assert done.exit_code == 0, done.output
    name: str = workspace.schedules.trigger("nightly", at=datetime.fromisoformat(NIGHTLY_AT.replace("Z", "+00:00")))
    workspace.wait(name, timeout=300)
    return name
