"""`orchestrator run --changed-since REF` end to end, with real kernels: the selected notebook runs, the one it
comes after runs for it, and the rest are recorded as skipped, "unchanged since REF", in results.json and
junit.xml."""

from __future__ import annotations

import pytest

import dataclasses
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.builders import make_notebook
from tests.cli_helpers import by_notebook, orchestrator_env, read_results, run_cli

# Real kernels or whole pipelines for every test: left out of `make test-fast`.
pytestmark = pytest.mark.slow

PLAN = """\
version: 1
notebooks:
  - glob: "*.ipynb"
  - path: train.ipynb
    after: [prepare.ipynb]
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)


def test_run_changed_since_runs_the_selection_and_skips_the_rest(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "orchestrator.yml").write_text(PLAN, encoding="utf-8")
    (repo / "model.py").write_text("WEIGHT = 1\n", encoding="utf-8")
    make_notebook(repo / "prepare.ipynb", "import os\nopen(os.environ['ORCHESTRATOR_STEP_OUTPUT'] + '/x', 'w').write('1')")
    make_notebook(repo / "train.ipynb", "import model\nassert model.WEIGHT == 2")
    make_notebook(repo / "unrelated.ipynb", "y = 1")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "base")
    work = tmp_path / "work"  # .orchestrator/ (runs and history) lives here
    work.mkdir()
    env = orchestrator_env(ORCHESTRATOR_HISTORY="")
    first = run_cli("run", repo, "--jobs", "2", cwd=work, env=env)  # main: train fails (WEIGHT is 1)
    assert first.returncode == 1, first.stderr
    [first_run] = [folder.name for folder in (work / ".orchestrator" / "runs").iterdir()]

    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "model.py").write_text("WEIGHT = 2\n", encoding="utf-8")  # uncommitted: counts too
    out = work / "pr"
    done = run_cli("run", repo, "--changed-since", "main", "--out", out, "--jobs", "2", cwd=work, env=env)
    assert done.returncode == 0, done.stderr
    assert "changed since main" in done.stderr and "1 of 3 notebooks selected" in done.stderr
    assert "imports model (cell 1, line 1): model.py changed" in done.stderr  # why, in the CI log
    assert f"prepare.ipynb: carried over from run {first_run}" in done.stderr

    steps = by_notebook(read_results(out))
    assert steps["train.ipynb"]["status"] == "passed"
    # train comes after prepare, which is unchanged since main: its passing result at main, with its files,
    # is carried from the history instead of running it again.
    assert steps["prepare.ipynb"]["status"] == "passed"
    assert steps["prepare.ipynb"]["carried_over_from"] == first_run
    assert (out / "steps" / steps["prepare.ipynb"]["step"] / "x").is_file()
    assert steps["unrelated.ipynb"]["status"] == "skipped"
    assert steps["unrelated.ipynb"]["reason"] == "unchanged since main"

    cases = {case.get("name"): case for case in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    skipped = [case.find("skipped") for name, case in cases.items() if "unrelated" in str(name)]
    assert len(skipped) == 1 and skipped[0] is not None
    assert skipped[0].get("message") == "unchanged since main"

    # The same notebook with other parameters is other code: nothing to carry, it runs.
    from orchestrator.changes import select_changed
    from orchestrator.changes.carry import carry_from_history
    from orchestrator.history import HistoryStore
    from orchestrator.plan import load_plan

    plan = load_plan(repo)
    selection = select_changed(plan, "main", path=repo)
    other = dataclasses.replace(plan, steps=tuple(dataclasses.replace(step, parameters={"seed": 1})
                                                  for step in plan.steps))
    kept = carry_from_history(other, selection, runs_dir=work / ".orchestrator" / "runs",
                              store=HistoryStore(work / ".orchestrator" / "history.sqlite"))
    assert kept.results == {} and kept.notes[0].startswith("prepare.ipynb: runs (no passing run of this code")
