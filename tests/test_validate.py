"""`orchestrator validate` reports every problem `orchestrator run` would stop a notebook for, with no kernel
started: the step runner's own checks, run ahead."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import PlanError
from orchestrator.plan import validate_plan
from tests.builders import make_notebook


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "repo"
    make_notebook(root / "good.ipynb", "x = 1")
    return root


def _problems(root: Path) -> list[str]:
    with pytest.raises(PlanError) as caught:
        validate_plan(root)
    return [str(problem) for problem in caught.value.problems]


def test_every_notebook_run_would_refuse_is_reported_at_once(repo: Path) -> None:
    (repo / "v2.ipynb").write_text(json.dumps({"nbformat": 2, "nbformat_minor": 0, "metadata": {}, "worksheets": []}))
    (repo / "truncated.ipynb").write_text(make_notebook(repo / "t.ipynb", "x = 1").read_text()[:40])
    (repo / "t.ipynb").unlink()
    bad_cell = json.loads(make_notebook(repo / "cell.ipynb", "x = 1").read_text())
    bad_cell["cells"][0]["cell_type"] = "codee"
    (repo / "cell.ipynb").write_text(json.dumps(bad_cell))
    make_notebook(repo / "r.ipynb", "x <- 1", kernel=None,
                  metadata={"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}})
    problems = _problems(repo)
    assert [p.split(":")[0] for p in problems] == ["repo/cell.ipynb", "repo/r.ipynb", "repo/truncated.ipynb",
                                                    "repo/v2.ipynb"]
    assert "not a valid Jupyter notebook" in problems[0]
    assert "the notebook's kernel 'ir' is not installed here, and it is written in R" in problems[1]
    assert "not valid JSON" in problems[2]
    assert "nbformat version 2 is not supported" in problems[3]


def test_a_plan_kernel_that_is_not_installed_is_a_problem(repo: Path) -> None:
    (repo / "orchestrator.yml").write_text("notebooks:\n  - path: good.ipynb\n    kernel: no-such-kernel\n")
    [problem] = _problems(repo)
    assert problem.startswith("repo/good.ipynb: kernel 'no-such-kernel', named by the plan, is not installed here")


def test_a_skipped_notebook_is_not_checked_and_a_good_plan_validates(repo: Path) -> None:
    (repo / "broken.ipynb").write_text("{")
    (repo / "orchestrator.yml").write_text("notebooks:\n  - glob: '*.ipynb'\n  - path: broken.ipynb\n    skip: wip\n")
    assert [step.notebook for step in validate_plan(repo).steps] == ["broken.ipynb", "good.ipynb"]


def test_a_notebook_nested_1000_levels_deep_is_one_invalid_notebook(repo: Path) -> None:
    from steps import run_notebook

    deep = repo / "deep.ipynb"
    deep.write_text('{"cells": ' + "[" * 1000 + "]" * 1000 + ', "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    assert _problems(repo) == ["repo/deep.ipynb: nested too deep to be read as a notebook"]
    request = run_notebook.StepRequest(notebook_path=deep, output_dir=repo / "out")
    assert run_notebook.preflight(request)[0] == f"{deep}: nested too deep to be read as a notebook"


def test_a_plan_fallback_kernel_that_is_not_installed_is_a_warning_when_no_notebook_needs_it(repo: Path) -> None:
    (repo / "orchestrator.yml").write_text("defaults:\n  kernel: no-such-kernel\n")
    plan = validate_plan(repo)
    assert "the plan's kernel 'no-such-kernel' (used when a notebook's own kernel is missing) is not installed here" \
        in plan.warnings
    make_notebook(repo / "bare.ipynb", "x = 1", kernel=None)  # names no kernel: it needs the fallback
    assert _problems(repo) == ["repo/bare.ipynb: kernel 'no-such-kernel' is not installed here" + _installed()]


def _installed() -> str:
    from steps.run_notebook import _installed as installed

    return str(installed())
