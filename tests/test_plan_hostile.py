"""Hostile and odd plans: each is refused quickly with file, place and reason (never a traceback or a hang),
or, where it is harmless, planned as its author meant."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.errors import InvalidInputError, PlanError
from orchestrator.plan import load_plan, validate_plan
from orchestrator.plan.cli_params import parse_cli_parameters
from orchestrator.plan.limits import MAX_PLAN_BYTES
from tests.builders import make_notebook


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "repo"
    make_notebook(root / "a.ipynb", "x = 1")
    make_notebook(root / "b.ipynb", "x = 2")
    return root


def _problems(root: Path, plan: str) -> list[str]:
    (root / "orchestrator.yml").write_text(plan, encoding="utf-8")
    started = time.monotonic()
    with pytest.raises(PlanError) as caught:
        load_plan(root)
    assert time.monotonic() - started < 5
    return [str(problem) for problem in caught.value.problems]


# ----------------------------------------------------------------------------------------------- YAML input


@pytest.mark.parametrize(("character", "shown"), [("\x1b", r"'\x1b'"), ("\x00", r"'\x00'")])
def test_a_control_character_in_the_plan_is_a_plan_error_with_its_line(repo: Path, character: str, shown: str) -> None:
    problems = _problems(repo, f"experiment: x\ndefaults:\n  kernel: py{character}\n")
    assert problems == [f"repo/orchestrator.yml: line 3, column 13: invalid YAML: the character {shown} is not allowed in YAML"]


def test_nesting_500_levels_deep_is_refused_not_a_recursion_error(repo: Path) -> None:
    problems = _problems(repo, "defaults:\n  parameters:\n    x: " + "[" * 500 + "]" * 500 + "\n")
    assert len(problems) == 1 and "nesting deeper than 100 levels" in problems[0] and "line 3" in problems[0]


def test_an_integer_of_more_than_4300_digits_is_refused_with_its_line(repo: Path) -> None:
    problems = _problems(repo, "defaults:\n  parameters:\n    x: " + "7" * 5000 + "\n")
    assert problems == ["repo/orchestrator.yml: line 3, column 8: invalid YAML: an integer of more than 4300 digits"]


def test_a_recursive_anchor_is_refused(repo: Path) -> None:
    problems = _problems(repo, "defaults:\n  parameters:\n    x: &loop [1, *loop]\n")
    assert "an alias refers to a value that contains it" in problems[0]


def _bomb(levels: int) -> str:
    lines = ["defaults:", "  parameters:", "    l0: &l0 [a, a, a, a, a, a, a, a, a]"]
    for level in range(1, levels + 1):
        lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_in_milliseconds(repo: Path) -> None:
    problems = _problems(repo, _bomb(9))  # 9**10 values once expanded
    assert len(problems) == 1 and "aliases expand this to more than 1,000,000 values" in problems[0]


def test_parameters_that_expand_past_the_size_limit_are_refused(repo: Path) -> None:
    problems = _problems(repo, _bomb(5))  # 590,490 values: under the node limit, far over the parameter size
    assert problems == [
        "repo/orchestrator.yml: line 2 (defaults.parameters): these parameters take more than 256 KiB as JSON; "
        "pass large data as a file the notebook reads"
    ]


def test_a_plan_file_over_the_size_limit_is_refused_before_it_is_parsed(repo: Path) -> None:
    problems = _problems(repo, "# padding\n" * (MAX_PLAN_BYTES // 10 + 1))
    assert problems == ["repo/orchestrator.yml: the plan file is 256 KiB, over the 256 KiB limit for a plan"]


def test_retries_are_bounded(repo: Path) -> None:
    problems = _problems(repo, "defaults:\n  retries: 100000000000000000000\n")
    assert problems == ["repo/orchestrator.yml: line 2 (defaults.retries): expected a number <= 10, got 100000000000000000000"]


def test_a_notebook_nested_too_deep_for_json_does_not_stop_the_rest_of_the_repository(repo: Path) -> None:
    (repo / "deep.ipynb").write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}", encoding="utf-8")
    plan = load_plan(repo)
    assert [step.notebook for step in plan.steps] == ["a.ipynb", "b.ipynb", "deep.ipynb"]
    assert any("deep.ipynb: cannot read its metadata (RecursionError" in warning for warning in plan.warnings)


# ------------------------------------------------------------------------------------------- the plan file


def test_a_dangling_plan_link_is_refused_not_ignored(repo: Path) -> None:
    (repo / "orchestrator.yml").symlink_to(repo / "gone.yml")
    with pytest.raises(PlanError, match="the plan file is a broken link or cannot be read"):
        load_plan(repo)


def test_a_plan_folder_or_fifo_is_refused(repo: Path) -> None:
    (repo / "orchestrator.yml").mkdir()
    with pytest.raises(PlanError, match="expected a plan file \\(YAML\\), found a folder"):
        validate_plan(repo)
    (repo / "orchestrator.yml").rmdir()
    os.mkfifo(repo / "orchestrator.yaml")
    with pytest.raises(PlanError, match="found not a regular file"):
        validate_plan(repo)


# --------------------------------------------------------------------------------------------------- links


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    make_notebook(folder / "secret.ipynb", "print('outside')")
    return folder


def test_discovery_skips_a_notebook_link_leading_out_of_the_root(repo: Path, outside: Path) -> None:
    (repo / "linked.ipynb").symlink_to(outside / "secret.ipynb")
    (repo / "inner.ipynb").symlink_to(repo / "a.ipynb")  # a link inside the root is fine
    plan = load_plan(repo)
    assert [step.notebook for step in plan.steps] == ["a.ipynb", "b.ipynb", "inner.ipynb"]
    assert any("'linked.ipynb' skipped: it leads through a symbolic link to" in w for w in plan.warnings)


def test_a_path_through_a_folder_link_out_of_the_root_is_refused(repo: Path, outside: Path) -> None:
    (repo / "shared").symlink_to(outside)
    problems = _problems(repo, "notebooks:\n  - path: shared/secret.ipynb\n")
    assert len(problems) == 1
    assert problems[0].startswith("repo/orchestrator.yml: line 2 (notebooks[0].path): expected a notebook inside "
                                  "the plan folder; 'shared/secret.ipynb': it leads through a symbolic link to ")


def test_a_pythonpath_link_out_of_the_root_is_refused(repo: Path, outside: Path) -> None:
    (repo / "lib").symlink_to(outside)
    problems = _problems(repo, "defaults:\n  pythonpath: [., lib]\n")
    assert len(problems) == 1 and "line 2 (defaults.pythonpath[1]): expected a folder inside the plan folder" in problems[0]


def test_a_run_folder_inside_the_repository_is_never_discovered(repo: Path) -> None:
    make_notebook(repo / "results" / "steps" / "a" / "a.ipynb", "x = 1")
    (repo / "results" / ".orchestrator-run").write_text("{}")
    assert [step.notebook for step in load_plan(repo).steps] == ["a.ipynb", "b.ipynb"]


def test_a_fifo_named_like_a_notebook_is_skipped_not_read(repo: Path) -> None:
    os.mkfifo(repo / "pipe.ipynb")
    plan = load_plan(repo)
    assert [step.notebook for step in plan.steps] == ["a.ipynb", "b.ipynb"]
    assert any("'pipe.ipynb' skipped: not a regular file" in w for w in plan.warnings)


# --------------------------------------------------------------------------------------------------- --param


def test_param_values_are_typed_as_papermill_types_them() -> None:
    values = ["a=0123", "b=yes", "c=on", "d=NO", "e=1e3", "f=null", "g=None", "h=True", "i=2026-01-01", "j=",
              "k=-4", "l=0.5"]
    assert parse_cli_parameters(values) == {
        "a": 123, "b": "yes", "c": "on", "d": "NO", "e": 1000.0, "f": "null", "g": None, "h": True,
        "i": "2026-01-01", "j": "", "k": -4, "l": 0.5,
    }


def test_param_yaml_is_never_parsed() -> None:
    assert parse_cli_parameters(["x=&a [*a]", "y={a: 1}"]) == {"x": "&a [*a]", "y": "{a: 1}"}


def test_bad_params_are_all_reported() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_cli_parameters(["1x=2", "class=3", "big=" + "9" * 5000, "fine=1"])
    assert [str(p) for p in caught.value.problems] == [
        "--param: '1x=2': expected NAME=VALUE with NAME a Python identifier",
        "--param: 'class=3': expected NAME=VALUE with NAME a Python identifier",
        "--param: 'big': expected an integer of at most 4300 digits (Python's limit for int())",
    ]


def test_params_over_the_size_limit_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="the parameters take more than 256 KiB"):
        parse_cli_parameters(["x=" + "a" * 300_000])


def test_a_bad_param_exits_2_before_any_run_folder_is_made(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["run", str(repo), "--out", str(repo.parent / "run"), "--param", "f=1", "--param", "2x=3"])
    assert exited.value.code == 2
    assert "--param: '2x=3': expected NAME=VALUE with NAME a Python identifier" in capsys.readouterr().err
    assert not (repo.parent / "run").exists()


def test_run_notebook_refuses_parameter_names_that_are_not_identifiers(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from steps._cli import BadArguments, parse_arguments

    arguments = [str(tmp_path / "a.ipynb"), "--output-dir", str(tmp_path / "out")]
    with pytest.raises(BadArguments) as caught:
        parse_arguments([*arguments, "--parameters", '{"x; import os": 1, "class": 2, "fine": 3}'])
    assert caught.value.exit_code == 2
    assert "--parameters: expected names that are Python identifiers, got 'x; import os', 'class'" in capsys.readouterr().err
    assert parse_arguments([*arguments, "--parameters", '{"fine": 3}'])["parameters"] == {"fine": 3}
