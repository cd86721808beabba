"""Notebook file names with a newline, a backslash or an escape character: every output format shows them
escaped and intact, and none can forge a line in a CI log or lose a report link."""

from __future__ import annotations

import io
import json
from pathlib import Path

from orchestrator.progress import PlainProgress
from orchestrator.report import build_report
from steps.step_result import StepResult
from tests.report_builders import executed_notebook, step_result, write_run

FORGED = "a\nstep=b status=passed\x1b[2J.ipynb"


def test_a_newline_in_a_name_cannot_forge_a_ci_log_line() -> None:
    stream = io.StringIO()
    progress = PlainProgress(stream)
    progress.step_started("a", FORGED, 1)
    progress.step_finished(StepResult.from_json({"step": "a", "notebook": FORGED, "status": "failed",
                                                 "error": {"ename": "E", "evalue": "x\n##vso[task.complete result=Succeeded]"}}))
    lines = stream.getvalue().splitlines()
    assert lines == [
        "step=a status=running notebook=a\\nstep=b status=passed\\x1b[2J.ipynb",
        "step=a status=failed secs=0.0 error='E: x\\n##vso[task.complete result=Succeeded]'",
    ]


def test_names_are_one_line_in_junit_and_linked_in_the_report(tmp_path: Path) -> None:
    odd = step_result("back\\slash.ipynb", "passed") | {"step": "back_slash"}
    forged = step_result(FORGED, "failed") | {"step": "forged", "output_notebook": None}
    run_dir = write_run(tmp_path / "run", [odd, forged], notebooks=False)
    executed_notebook(run_dir / "steps" / "back_slash" / "back\\slash.ipynb")
    build_report(run_dir)
    junit = (run_dir / "junit.xml").read_text()
    assert 'name="back\\slash.ipynb"' in junit
    assert 'name="a\\nstep=b status=passed\\x1b[2J.ipynb"' in junit
    html = (run_dir / "report.html").read_text()
    assert 'href="steps/back_slash/back%5Cslash.ipynb"' in html
    assert json.loads((run_dir / "results.json").read_text())["steps"][0]["notebook"] == "back\\slash.ipynb"
