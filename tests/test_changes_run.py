"""`orchestrator run --changed-since REF` end to end, with real kernels: the selected notebook runs, the one it
comes after runs for it, and the rest are recorded as skipped, "unchanged since REF", in results.json and
junit.xml."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.builders import make_notebook
from tests.cli_helpers import by_notebook, read_results, run_cli

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
    make_notebook(repo / "prepare.ipynb", "x = 1")
    make_notebook(repo / "train.ipynb", "import model\nassert model.WEIGHT == 2")
    make_notebook(repo / "unrelated.ipynb", "raise SystemExit('must not run')")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "base")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "model.py").write_text("WEIGHT = 2\n", encoding="utf-8")  # uncommitted: counts too

    out = tmp_path / "run"
    done = run_cli("run", repo, "--changed-since", "main", "--out", out, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "changed since main" in done.stderr and "1 of 3 notebooks selected" in done.stderr
    assert "imports model (cell 1, line 1): model.py changed" in done.stderr  # why, in the CI log

    steps = by_notebook(read_results(out))
    assert steps["train.ipynb"]["status"] == "passed"
    assert steps["prepare.ipynb"]["status"] == "passed"  # train comes after it
    assert steps["unrelated.ipynb"]["status"] == "skipped"
    assert steps["unrelated.ipynb"]["reason"] == "unchanged since main"

    cases = {case.get("name"): case for case in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    skipped = [case.find("skipped") for name, case in cases.items() if "unrelated" in str(name)]
    assert len(skipped) == 1 and skipped[0] is not None
    assert skipped[0].get("message") == "unchanged since main"
