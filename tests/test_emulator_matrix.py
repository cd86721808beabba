"""The pessimistic-assumption matrix (issue 8, item 3): a pipeline with passing, failing, timed-out, crashed,
errored and skipped notebooks, run in the emulated workspace, yields the report a local run gives: every notebook
there, each with the local run's status and error kind, none `passed` that did not pass. Where on_finalize is
assumed never to fire, the `--wait` backstop builds it. Under `reused-hidden`, a `rerun --failed` reuses the passed
notebook and still reports it.

`make test` runs three configurations that together put every assumption on each report path: none (the
baseline), all (the backstop on the submitting machine, under every tag pessimism), and every assumption but
finalize-never (the report node under every tag pessimism). Each assumption alone is marked `exhaustive`
(`make test-all`): about 12 s each, for a regression that only one assumption alone would show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace  # noqa: E402
from tests.emulator_support import SEARCH_LAG_S, SETTLE_S, compiled, follow_job, outcome_repo, statuses  # noqa: E402

EACH_PATH = {
    "default": (),
    "all": ("all",),
    "report-node-pessimistic": ("no-parent-tag", "reused-hidden", "search-lag"),
}
ALONE = {
    "finalize-never": ("finalize-never",),
    "no-parent-tag": ("no-parent-tag",),
    "reused-hidden": ("reused-hidden",),
    "search-lag": ("search-lag",),
}
CONFIGS = [pytest.param(names, id=name) for name, names in EACH_PATH.items()] + [
    pytest.param(names, id=name, marks=pytest.mark.exhaustive) for name, names in ALONE.items()]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("matrix")
    repo = outcome_repo(root / "repo")
    out = root / "build" / "pipeline.yml"
    compiled(repo, out)
    return repo, out


@pytest.fixture(scope="module")
def local(pipeline: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the local backend says about the same plan."""
    from orchestrator.backends import RunOptions, get_backend
    from orchestrator.plan import load_plan
    from orchestrator.progress import PlainProgress

    run_dir = tmp_path_factory.mktemp("local-run")
    outcome = get_backend("local").run(load_plan(pipeline[0]), RunOptions(run_dir=run_dir, run_id="local"), PlainProgress())
    return statuses(outcome.results)


@pytest.mark.slow
@pytest.mark.parametrize("names", CONFIGS)
def test_report_is_complete_and_true(names: tuple[str, ...], pipeline: tuple[Path, Path], local: dict[str, Any],
                                     tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    from orchestrator.azureml.rerun import prepare_clone

    assumptions = Assumptions.parse(names, search_lag_s=SEARCH_LAG_S)
    workspace = EmulatedWorkspace(tmp_path / "workspace", assumptions=assumptions,
                                  node_environment={"ORCHESTRATOR_DISCOVERY_SETTLE_S": SETTLE_S})
    try:
        results = follow_job(workspace, load_job(pipeline[1]), tmp_path / "run", key="first")
        assert statuses(results) == local
        assert results["reported_by"] == ("backstop on the submitting machine" if assumptions.finalize_never
                                          else "azureml report node")
        if not assumptions.reused_hidden:
            return
        # rerun --failed: the same graph and run_key; the passed notebook is reused, the rest runs again.
        first = workspace.jobs.get(results["azureml"]["job_name"])
        clone, _ = prepare_clone(first, failed=True, job_name=first.name)
        again = follow_job(workspace, clone, tmp_path / "rerun", key="rerun")
        assert statuses(again) == local
        reused = {c.node: c.reused_from for c in workspace.state(again["azureml"]["job_name"]).children.values()}
        assert reused["a_pass"] is not None and reused["b_fail"] is None
    finally:
        workspace.close()
