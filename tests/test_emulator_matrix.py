"""The pessimistic-assumption matrix (issue 8, item 3): a pipeline with passing, failing, timed-out, crashed,
errored and skipped notebooks, run in the emulated workspace, yields the report a local run gives: every notebook
there, each with the local run's status and error kind, none `passed` that did not pass. Under `reused-hidden`,
a `rerun --failed` reuses the passed notebook and still reports it.

Both report paths are checked on every pipeline run: the report node's (or, where on_finalize is assumed never to
fire, the `--wait` follower's), and the backstop's, built again from the same finished job's node outputs. So
`make test` runs two configurations: none (the baseline) and every tag pessimism together (the report node under
no-parent-tag, reused-hidden and search-lag, with a rerun). `all` and each assumption alone are marked
`exhaustive` (`make test-all`, ~12-30 s each) for a regression only that combination would show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml")

from orchestrator.azureml.emulator import Assumptions, EmulatedWorkspace  # noqa: E402
from tests.emulator_support import SEARCH_LAG_S, SETTLE_S, compiled, follow_job, outcome_repo, statuses  # noqa: E402

CONFIGS = [
    pytest.param((), id="default"),
    pytest.param(("no-parent-tag", "reused-hidden", "search-lag"), id="tag-pessimism"),
    pytest.param(("all",), id="all", marks=pytest.mark.exhaustive),
    *(pytest.param((name,), id=name, marks=pytest.mark.exhaustive)
      for name in ("finalize-never", "no-parent-tag", "reused-hidden", "search-lag")),
]


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
    return statuses(outcome.results.to_json())


@pytest.mark.slow
@pytest.mark.parametrize("names", CONFIGS)
def test_report_is_complete_and_true(names: tuple[str, ...], pipeline: tuple[Path, Path], local: dict[str, Any],
                                     tmp_path: Path) -> None:
    from azure.ai.ml import load_job

    from orchestrator.azureml.rerun import expected_of, prepare_clone
    from orchestrator.azureml.watch import backstop

    def backstop_agrees(results: dict[str, Any], job: Any, folder: Path) -> None:
        built = backstop(workspace, results["azureml"]["job_name"], folder, expected=expected_of(job), run_id="backstop",
                         title="emulated")
        assert statuses(built.to_json()) == local

    assumptions = Assumptions.parse(names, search_lag_s=SEARCH_LAG_S)
    workspace = EmulatedWorkspace(tmp_path / "workspace", assumptions=assumptions,
                                  node_environment={"ORCHESTRATOR_DISCOVERY_SETTLE_S": SETTLE_S})
    try:
        job = load_job(pipeline[1])
        results = follow_job(workspace, job, tmp_path / "run", key="first")
        assert statuses(results) == local
        assert results["reported_by"] == ("backstop on the submitting machine" if assumptions.finalize_never
                                          else "azureml report node")
        backstop_agrees(results, job, tmp_path / "backstop")
        if not assumptions.reused_hidden:
            return
        # rerun --failed: the same graph and run_key; the passed notebook is reused, the rest runs again.
        first = workspace.jobs.get(results["azureml"]["job_name"])
        clone, _ = prepare_clone(first, failed=True, job_name=first.name)
        again = follow_job(workspace, clone, tmp_path / "rerun", key="rerun")
        assert statuses(again) == local
        backstop_agrees(again, clone, tmp_path / "rerun-backstop")
        reused = {c.node: c.reused_from for c in workspace.state(again["azureml"]["job_name"]).children.values()}
        assert reused["a_pass"] is not None and reused["b_fail"] is None
    finally:
        workspace.close()
