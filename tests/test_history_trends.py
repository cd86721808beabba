"""Trends, baselines and flakiness from the run history, in the report; relative expectations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.history import HistoryStore, remember_run
from orchestrator.history.baselines import resolve_baselines
from orchestrator.history.sparkline import sparkline
from orchestrator.history.trends import notebook_trends
from orchestrator.plan.rules import check_rule, resolve_relative
from orchestrator.plan.spec import ResolvedPlan, StepSpec
from orchestrator.report import build_report
from orchestrator.results import RunResults, load_results
from tests.builders import glue_source, make_notebook
from tests.cli_helpers import by_notebook, orchestrator_env, read_results, run_cli
from tests.history_builders import FakeStep, fake_run


def _history(tmp_path: Path, root: Path, runs: list[tuple[str, str, list[FakeStep]]]) -> HistoryStore:
    """Record fake runs (branch, status of the notebook...) in order, a day apart."""
    store = HistoryStore(tmp_path / "h.sqlite")
    for n, (branch, run_id, steps) in enumerate(runs):
        folder = fake_run(tmp_path / "runs" / run_id, run_id=run_id, started_at=f"2026-01-{n + 1:02d}T00:00:00Z",
                          root=root, steps=steps, branch=branch)
        assert remember_run(folder, store) is None
    return store


def test_trend_on_the_branch_change_against_the_default_branch_baseline_and_flakiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_DEFAULT_BRANCH", "main")
    root = tmp_path / "repo"
    same_code = {"extra": {}}
    runs = [
        ("main", "m1", [FakeStep("nb.ipynb", metrics={"acc": 0.97}, duration_s=10.0, **same_code)]),
        ("main", "m2", [FakeStep("nb.ipynb", status="failed", metrics={"acc": 0.50}, duration_s=11.0)]),
        ("topic", "t1", [FakeStep("nb.ipynb", metrics={"acc": 0.95}, duration_s=12.0)]),
        ("topic", "t2", [FakeStep("nb.ipynb", status="failed", metrics={"acc": 0.93}, duration_s=13.0)]),
        ("topic", "t3", [FakeStep("nb.ipynb", metrics={"acc": 0.91}, duration_s=14.0)]),
    ]
    store = _history(tmp_path, root, runs)
    results = load_results(tmp_path / "runs" / "t3")
    trend = notebook_trends(results, store)["nb.ipynb"]
    # Same branch (topic) in order, this run last; the baseline is m1 (m2 did not pass).
    assert trend.metrics["acc"].values == (0.95, 0.93, 0.91)
    assert trend.metrics["acc"].baseline == 0.97 and trend.metrics["acc"].change == pytest.approx(-0.06)
    assert trend.duration.values == (12.0, 13.0, 14.0) and trend.duration.change == pytest.approx(4.0)
    assert trend.baseline is not None and trend.baseline.run_id == "m1"
    # Fake runs have no executed notebook, hence no code id: never called flaky on unknown code.
    assert trend.flaky is None
    # The report of an older run sees the history as it stood then.
    assert notebook_trends(load_results(tmp_path / "runs" / "t1"), store)["nb.ipynb"].metrics["acc"].values == (0.95,)


def test_relative_rules_are_checked_at_load_and_resolved_against_the_baseline(tmp_path: Path) -> None:
    assert check_rule(" >= baseline - 0.02 ") == ">= baseline - 0.02"
    assert resolve_relative("<= baseline + 10%", 200.0) == "<= 220"
    with pytest.raises(ValueError, match="baseline"):
        check_rule(">= baseline * 2")
    store = _history(tmp_path, tmp_path, [("main", "m1", [FakeStep("a.ipynb", metrics={"acc": 0.97})])])
    steps = tuple(
        StepSpec(id=name, notebook=f"{name}.ipynb", target="cpu", environment="default", kernel="python3",
                 timeout_s=None, cell_timeout_s=None, retries=0, expect=expect)
        for name, expect in (("a", {"acc": ">= baseline - 0.02", "loss": "< baseline", "n": ">= 1"}),
                             ("b", {"acc": ">= baseline"}))
    )
    plan = ResolvedPlan(root=tmp_path, plan_file=None, experiment="x", steps=steps, targets={}, environments={})
    import os

    os.environ["ORCHESTRATOR_DEFAULT_BRANCH"] = "main"
    try:
        resolved, notes = resolve_baselines(plan, store)
    finally:
        del os.environ["ORCHESTRATOR_DEFAULT_BRANCH"]
    assert resolved.step("a").expect == {"acc": ">= 0.95", "n": ">= 1"}
    assert resolved.step("b").expect == {}
    assert any("'>= baseline - 0.02' checked as '>= 0.95' (baseline 0.97 from run m1 on main)" in n for n in notes)
    assert any("expect.loss" in n and "did not record this metric" in n for n in notes)
    assert any("b.ipynb: expect.acc" in n and "no passing run on main" in n for n in notes)


def test_sparkline_is_numbers_only_and_needs_two_points() -> None:
    svg = sparkline([1.0, 3.0, 2.0], title="<b>acc</b>")
    assert svg.startswith("<svg") and "&lt;b&gt;acc&lt;/b&gt;" in svg and "<b>" not in svg
    assert re.search(r'points="2\.0,16\.0 40\.0,2\.0 78\.0,9\.0"', svg), svg
    assert sparkline([1.0]) == "" and sparkline([float("nan"), 1.0]) == ""


@pytest.mark.slow
def test_runs_with_changing_metrics_show_the_trend_and_the_missed_relative_expectation(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_notebook(repo / "train.ipynb", glue_source("accuracy", "__ACC__").replace("'__ACC__'", "acc"),
                  parameters="acc = 0.0")
    (repo / "orchestrator.yml").write_text(
        "version: 1\nnotebooks:\n  - path: train.ipynb\n    expect: {accuracy: '>= baseline - 0.02'}\n", encoding="utf-8")
    env = orchestrator_env(ORCHESTRATOR_HISTORY=str(tmp_path / "h.sqlite"), BUILD_SOURCEBRANCH="refs/heads/main",
                           ORCHESTRATOR_DEFAULT_BRANCH="main")
    first = run_cli("run", repo, "--out", tmp_path / "r1", "--param", "acc=0.97", env=env)
    assert first.returncode == 0, first.stderr
    assert "not checked: no passing run on main" in first.stderr
    second = run_cli("run", repo, "--out", tmp_path / "r2", "--param", "acc=0.91", env=env)
    assert second.returncode == 1, second.stderr
    assert "checked as '>= 0.95' (baseline 0.97" in second.stderr
    step = by_notebook(read_results(tmp_path / "r2"))["train.ipynb"]
    assert step["status"] == "failed" and step["expectations"][0]["rule"] == ">= 0.95"
    page = (tmp_path / "r2" / "report.html").read_text(encoding="utf-8")
    cell = page[page.index('data-metric="accuracy"'):]
    assert "<svg" in cell.split("</td>")[0] and "\u22120.06 vs baseline" in cell.split("</td>")[0]
    assert "duration-trend" in page
    # Rebuilding the report later gives the same page body (the history is read as it stood then).
    build_report(tmp_path / "r2", render_notebooks=False)


def test_a_notebook_whose_status_alternates_on_unchanged_code_is_flaky_and_tagged_in_the_report(
    tmp_path: Path,
) -> None:
    from orchestrator.history.store import HistoryRun, NotebookOutcome
    from orchestrator.report.html import write_html

    store = HistoryStore(tmp_path / "h.sqlite")
    statuses = ["failed", "passed", "failed", "passed"]  # the last is the reported run
    for n, status in enumerate(statuses):
        code = "same" if n else "older"  # the first run had other code: not counted
        outcome = NotebookOutcome("nb", "nb.ipynb", status, 1.0, 1, {}, code)
        store.record(HistoryRun(f"r{n}", str(tmp_path), "x", "local", status, f"2026-01-0{n + 1}T00:00:00Z", None,
                                None, "main", (outcome,)))
    results = {"run_id": "r3", "root": str(tmp_path), "started_at": "2026-01-04T00:00:00Z", "branch": "main",
               "status": "passed", "steps": [{"step": "nb", "notebook": "nb.ipynb", "status": "passed",
                                              "duration_s": 1.0}]}
    trend = notebook_trends(RunResults.from_json(results), store)["nb.ipynb"]
    assert trend.flaky == "passed, failed, passed over the last 3 runs of this code"
    write_html(RunResults.from_json(results), tmp_path, tmp_path / "report.html", trends={"nb.ipynb": trend})
    assert 'class="tag flaky" title="status alternated: passed, failed, passed over' in (tmp_path / "report.html").read_text()
    # Steady on the same code since: the one failure leaves the window of 6, not flaky any more.
    for n in range(4, 8):
        store.record(HistoryRun(f"r{n}", str(tmp_path), "x", "local", "passed", f"2026-01-0{n + 1}T00:00:00Z", None,
                                None, "main", (NotebookOutcome("nb", "nb.ipynb", "passed", 1.0, 1, {}, "same"),)))
    later = {**results, "run_id": "r7", "started_at": "2026-01-08T00:00:00Z"}
    assert notebook_trends(RunResults.from_json(later), store)["nb.ipynb"].flaky is None
