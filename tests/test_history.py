"""The run history: the SQLite store (two writers at once), run folders -> entries, `orchestrator history`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.errors import InvalidInputError
from orchestrator.history import HistoryStore, expected_durations, remember_run, run_from_folder
from orchestrator.history.vcs import current_branch, short_branch
from orchestrator.plan.spec import ResolvedPlan, StepSpec
from tests.cli_helpers import orchestrator_env, run_cli
from tests.history_builders import FakeStep, fake_run

WRITER = """
import sys
from orchestrator.history.store import HistoryRun, HistoryStore, NotebookOutcome
store = HistoryStore(__import__("pathlib").Path(sys.argv[1]))
for n in range(int(sys.argv[3])):
    notebooks = tuple(NotebookOutcome(f"nb{i}", f"nb{i}.ipynb", "passed", float(i), 1, {"m": float(n)})
                      for i in range(20))
    store.record(HistoryRun(f"{sys.argv[2]}-{n:03d}", "/repo", "repo", "local", "passed",
                            f"2026-01-01T00:00:{n:02d}Z", None, None, "main", notebooks))
"""


def test_two_processes_recording_at_once_both_land_whole(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    HistoryStore(path).notebook_history()  # no file yet: nothing, and nothing created
    assert not path.exists()
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "15"]) for name in ("a", "b")]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    history = HistoryStore(path).notebook_history()
    assert len(history) == 20
    runs = {run.run_id for run in history["nb0.ipynb"]}
    assert len(runs) == 30 and all(len(history[f"nb{i}.ipynb"]) == 30 for i in range(20))
    # WAL: a reader never waits on a writer, and the journal mode sticks to the file.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_run_folder_becomes_one_entry_and_recording_it_again_replaces_it(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run = fake_run(tmp_path / "r1", run_id="r1", started_at="2026-01-01T00:00:00Z", root=root, steps=[
        FakeStep("a.ipynb", metrics={"acc": 0.9, "flag": True, "name": "x"}),
        FakeStep("b.ipynb", status="failed", duration_s=3.0, attempts=2),
        FakeStep("c.ipynb", extra={"carried_over_from": "r0"}),  # measured by the run it repairs
    ])
    store = HistoryStore(tmp_path / "h.sqlite")
    assert remember_run(run, store) is None
    assert remember_run(run, store) is None
    history = store.notebook_history(root=str(root))
    assert sorted(history) == ["a.ipynb", "b.ipynb"]
    (a,) = history["a.ipynb"]
    assert a.record.metrics == {"acc": 0.9, "flag": 1.0} and a.branch == "main" and a.commit == "c0ffee"
    assert history["b.ipynb"][0].record.attempts == 2 and history["b.ipynb"][0].record.status == "failed"


def test_an_unfinished_run_or_a_non_run_folder_is_refused_with_its_path(tmp_path: Path) -> None:
    running = fake_run(tmp_path / "r", run_id="r", started_at="t", root=tmp_path, steps=[], status="running")
    with pytest.raises(InvalidInputError, match="not finished"):
        run_from_folder(running)
    warning = remember_run(tmp_path / "nothing", HistoryStore(tmp_path / "h.sqlite"))
    assert warning is not None and "nothing" in warning


def test_a_corrupt_history_file_is_a_clear_error_and_never_fails_a_run(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    run = fake_run(tmp_path / "r1", run_id="r1", started_at="t", root=tmp_path, steps=[FakeStep("a.ipynb")])
    warning = remember_run(run, HistoryStore(path))
    assert warning is not None and str(path) in warning
    with pytest.raises(InvalidInputError, match="not a readable run history"):
        HistoryStore(path).notebook_history()


def test_expected_duration_is_the_recent_median_else_the_plans_estimate(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    for n, seconds in enumerate([10.0, 12.0, 100.0, 11.0]):
        remember_run(fake_run(tmp_path / f"r{n}", run_id=f"r{n}", started_at=f"2026-01-0{n + 1}T00:00:00Z",
                              root=tmp_path, steps=[FakeStep("a.ipynb", duration_s=seconds),
                                                    FakeStep("b.ipynb", status="skipped", duration_s=0.0)]), store)
    steps = tuple(StepSpec(id=name, notebook=f"{name}.ipynb", target="cpu", environment="default", kernel="python3",
                           timeout_s=None, cell_timeout_s=None, retries=0, expected_duration_s=estimate)
                  for name, estimate in (("a", 5.0), ("b", 60.0), ("c", None)))
    plan = ResolvedPlan(root=tmp_path, plan_file=None, experiment="x", steps=steps, targets={}, environments={})
    # a: measured (median of 10, 12, 100, 11); b: only ever skipped, so the plan's 60s; c: nothing known.
    assert expected_durations(plan, store) == {"a": 11.5, "b": 60.0}


def test_branch_from_ci_variables_before_git() -> None:
    assert current_branch(Path("/nonexistent"), {"BUILD_SOURCEBRANCH": "refs/heads/feature/x"}) == "feature/x"
    pull = {"BUILD_SOURCEBRANCH": "refs/pull/7/merge", "SYSTEM_PULLREQUEST_SOURCEBRANCH": "refs/heads/topic"}
    assert current_branch(Path("/nonexistent"), pull) == "topic"
    assert short_branch("origin/main") == "main"


def test_history_command_shows_imports_filters_and_rejects_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    for n in range(3):
        fake_run(tmp_path / "runs" / f"r{n}", run_id=f"run-{n}", started_at=f"2026-01-0{n + 1}T10:00:00Z", root=root,
                 steps=[FakeStep("models/train.ipynb", duration_s=60.0 + n, metrics={"acc": 0.9 + n / 100}),
                        FakeStep("data.ipynb", status="failed" if n == 1 else "passed")])
    env = {"ORCHESTRATOR_HISTORY": str(tmp_path / "h.sqlite")}
    runner = CliRunner()
    imported = runner.invoke(cli, ["history", "import", *map(str, sorted((tmp_path / "runs").iterdir()))], env=env)
    assert imported.exit_code == 0, imported.output
    assert imported.stdout.count("imported run-") == 3

    shown = runner.invoke(cli, ["history", str(root), "--last", "2"], env=env)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "data.ipynb  (1/2 passed, median 1.0s)"
    train = lines.index("models/train.ipynb  (2/2 passed, median 1m02s)")
    assert "run-2" in lines[train + 1] and "acc=0.92" in lines[train + 1] and "main@c0ffee" in lines[train + 1]
    assert "run-1" in lines[train + 2] and len(lines) == train + 3

    as_json = runner.invoke(cli, ["history", "--notebook", "models/**", "--json"], env=env)
    data = json.loads(as_json.stdout)
    assert [entry["notebook"] for entry in data] == ["models/train.ipynb"]
    assert [run["run_id"] for run in data[0]["runs"]] == ["run-2", "run-1", "run-0"]
    assert data[0]["runs"][0]["metrics"] == {"acc": 0.92}

    cli_env = orchestrator_env(**env)
    bad = run_cli("history", "import", tmp_path / "runs" / "r0", tmp_path / "missing", env=cli_env)
    assert bad.returncode == 2 and "missing" in bad.stderr and "Traceback" not in bad.stderr
    escaping = run_cli("history", "--notebook", "../x", env=cli_env)
    assert escaping.returncode == 2 and "--notebook" in escaping.stderr
