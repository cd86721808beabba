"""Plan problems: each names its file, line and key path, says what was expected and what it got, and all of
them are reported at once (docs/architecture.md#plan-file; docs/architecture.md#validate-before-running)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import EXIT_INVALID_INPUT, PlanError, Problem
from orchestrator.plan import load_plan, validate_plan
from tests.builders import make_notebook

PLAN = "repo/orchestrator.yml"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small notebook repository; problems then name files as repo/..., relative to the working folder."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "repo"
    for notebook in ("prepare.ipynb", "train.ipynb", "nbs/a.ipynb", "nbs/b.ipynb"):
        make_notebook(root / notebook, "x = 1")
    (root / "envs").mkdir()
    (root / "envs" / "cpu.yml").write_text("name: cpu\n")
    return root


def _problems(root: Path, plan: str | None = None, **kwargs: Any) -> list[str]:
    if plan is not None:
        (root / "orchestrator.yml").write_text(plan, encoding="utf-8")
    with pytest.raises(PlanError) as caught:
        load_plan(root, **kwargs)
    return [str(problem) for problem in caught.value.problems]


def _one(root: Path, plan: str | None = None, **kwargs: Any) -> str:
    problems = _problems(root, plan, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------------------------------------- the brief's


def test_a_bad_duration_names_file_line_key_path_expected_and_got(repo: Path) -> None:
    plan = "notebooks:\n" + "".join(f"  - path: {nb}\n" for nb in ("prepare.ipynb", "train.ipynb", "nbs/a.ipynb"))
    plan += "  - path: nbs/b.ipynb\n    timeout: soon\n"
    assert _one(repo, plan) == (
        f"{PLAN}: line 6 (notebooks[3].timeout): "
        "expected a duration like 90s, 30m, 2h or a number of seconds, got 'soon'"
    )


def test_every_problem_is_reported_at_once_in_line_order(repo: Path) -> None:
    problems = _problems(
        repo,
        """\
version: 1
experimnet: x
defaults:
  timeout: soon
  target: gpux
notebooks:
  - path: trian.ipynb
  - path: train.ipynb
    retries: -1
    timout: 3
    expect: {accuracy: 0.9}
    after: [missing.ipynb]
""",
    )
    assert problems == [
        f"{PLAN}: line 2 (experimnet): unknown key 'experimnet' (did you mean 'experiment'?)",
        f"{PLAN}: line 4 (defaults.timeout): expected a duration like 90s, 30m, 2h or a number of seconds, got 'soon'",
        f"{PLAN}: line 5 (defaults.target): unknown target 'gpux' (did you mean 'gpu'?); expected one of: cpu, gpu "
        "(or declare it under targets)",
        f"{PLAN}: line 7 (notebooks[0].path): no such notebook: 'trian.ipynb' (did you mean 'train.ipynb'?)",
        f"{PLAN}: line 9 (notebooks[1].retries): expected a number >= 0, got -1",
        f"{PLAN}: line 10 (notebooks[1].timout): unknown key 'timout' (did you mean 'timeout'?)",
        f"{PLAN}: line 11 (notebooks[1].expect.accuracy): "
        "expected a rule like '>= 0.9', '< 5', '0.8..1.0', '~= 0.5 +- 0.01' or '>= baseline - 0.02', got 0.9",
        f"{PLAN}: line 12 (notebooks[1].after[0]): 'missing.ipynb' names no notebook in the plan",
    ]


def test_plan_error_is_invalid_input_and_crosses_processes(repo: Path) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan(repo, only=["nothing/**"])
    assert caught.value.exit_code == EXIT_INVALID_INPUT
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.problems == caught.value.problems


# ------------------------------------------------------------------------------------------- the whole file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", f"{PLAN}: the plan file is empty; expected a mapping with keys version, experiment, defaults, "),
        ("# only a comment\n", f"{PLAN}: the plan file is empty"),
        ("- path: a.ipynb\n", f"{PLAN}: line 1: expected a mapping with keys version, "),
        ("just words\n", f"{PLAN}: line 1: expected a mapping with keys"),
        ("version: 2\n", f"{PLAN}: line 1 (version): expected 1, got 2"),
        ("notebooks: []\n", f"{PLAN}: line 1: the plan selects no notebooks"),
        ("notebooks:\n", f"{PLAN}: line 1 (notebooks): expected a value, got null"),
        ("notebooks: {path: a.ipynb}\n", f"{PLAN}: line 1 (notebooks): expected a list, got a mapping"),
        ("secret_env: [MY-TOKEN]\n", f"{PLAN}: line 1 (secret_env[0]): expected an environment variable name"),
    ],
)
def test_a_plan_that_is_not_a_plan(repo: Path, text: str, expected: str) -> None:
    assert _one(repo, text).startswith(expected)


def test_invalid_yaml_gives_line_and_column(repo: Path) -> None:
    problem = _one(repo, "notebooks:\n  - path: train.ipynb\n   glob: '*.ipynb'\n")
    assert problem.startswith(f"{PLAN}: line 3, column 4: invalid YAML: ")


def test_unknown_top_level_key_without_a_close_match_lists_the_keys(repo: Path) -> None:
    assert _one(repo, "jobs: []\n") == (
        f"{PLAN}: line 1 (jobs): unknown key 'jobs'; "
        "expected one of: version, experiment, defaults, targets, environments, notebooks, secret_env, pack, "
        "pass_env, isolation, warm_kernels"
    )


def test_a_repeated_key_is_reported(repo: Path) -> None:
    problem = _one(repo, "notebooks:\n  - path: train.ipynb\n    timeout: 1m\n    timeout: 2m\n")
    assert problem == (
        f"{PLAN}: line 4 (notebooks[0].timeout): duplicate key 'timeout': the later value would silently replace "
        "the earlier"
    )


def test_missing_paths(repo: Path, tmp_path: Path) -> None:
    assert _one(tmp_path / "nowhere") == "nowhere: no such file or folder"
    assert _one(repo, plan_file=tmp_path / "other.yml") == "other.yml: no such plan file"
    (tmp_path / "empty").mkdir()
    assert _one(tmp_path / "empty") == "empty: no notebooks (*.ipynb) found here"
    (repo / "script.py").write_text("print(1)\n")
    assert _one(repo / "script.py") == (
        "repo/script.py: expected a folder, a plan file (.yml, .yaml) or a notebook (.ipynb)"
    )


# ---------------------------------------------------------------------------------------------- wrong values


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("timeout: 0", "(notebooks[0].timeout): expected a finite duration greater than zero, got 0"),
        ("timeout: 30 minutes", "(notebooks[0].timeout): expected a duration like 90s, 30m, 2h or a number of"),
        ("cell_timeout: true", "(notebooks[0].cell_timeout): expected a duration like 90s, 30m, 2h or a number of"),
        ("retries: 1.5", "(notebooks[0].retries): expected a whole number, got 1.5"),
        ("retries: '2'", "(notebooks[0].retries): expected a whole number, got '2'"),
        ("retries: -1", "(notebooks[0].retries): expected a number >= 0, got -1"),
        ("target: null", "(notebooks[0].target): expected a value, got null (leave the key out to keep the default)"),
        ("target: 5", "(notebooks[0].target): expected a string, got 5"),
        ("kernel: ''", "(notebooks[0].kernel): expected a name, got an empty string"),
        ("parameters: [1]", "(notebooks[0].parameters): expected a mapping (key: value), got a list"),
        ("parameters: {my-param: 1}", "(notebooks[0].parameters): expected parameter names that are Python identif"),
        ("parameters: {day: 2024-01-01}", "(notebooks[0].parameters): expected a string, number, true/false, null, "),
        ("parameters: {1: x}", "(notebooks[0].parameters): expected keys to be a string, got 1"),
        ("expect: {acc: '>> 1'}", "(notebooks[0].expect.acc): expected a rule like '>= 0.9', '< 5', '0.8..1.0', '~= 0.5 +- 0.01' or"),
        ("expect: {acc: '1..0'}", "(notebooks[0].expect.acc): expected a range low..high with low <= high, got"),
        ("expect: {acc: '~= 1 +- -1'}", "(notebooks[0].expect.acc): expected a tolerance >= 0 after +-, got"),
        ("after: train.ipynb", "(notebooks[0].after): expected a list, got 'train.ipynb'"),
        ("after: ['../x.ipynb']", "(notebooks[0].after[0]): expected a path inside the plan folder, got '../x.ipy"),
        ("skip: 3", "(notebooks[0].skip): expected a reason (a string) or true, got 3"),
        ("output_limit: lots", "(notebooks[0].output_limit): expected a size like 500kB, 2MB or a number of bytes"),
        ("pythonpath: [/abs]", "(notebooks[0].pythonpath[0]): expected a path relative to the plan folder, got t"),
        ("glob: '*.ipynb'", "(notebooks[0]): expected exactly one of path or glob, got both path and glob"),
        ("enviroment: cpu", "(notebooks[0].enviroment): unknown key 'enviroment' (did you mean 'environment'?)"),
    ],
)
def test_a_wrong_setting_says_what_was_expected(repo: Path, setting: str, expected: str) -> None:
    problem = _one(repo, f"notebooks:\n  - path: train.ipynb\n    {setting}\n")
    assert problem.startswith(f"{PLAN}: line ") and expected in problem, problem


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("targets: {big: {azureml: {}}}", "line 1 (targets.big.azureml): expected exactly one of compute or instanc"),
        ("targets: {big: {gpus: two}}", "line 1 (targets.big.gpus): expected a whole number, got 'two'"),
        ("targets: {big: {local: {slots: 0}}}", "line 1 (targets.big.local.slots): expected auto or a whole number"),
        ("targets: {big: {azure: {}}}", "line 1 (targets.big.azure): unknown key 'azure' (did you mean 'azureml'?)"),
        ("environments: {e: {conda: envs/gpu.yml}}", "line 1 (environments.e.conda): expected a conda file relative"),
        ("environments: {e: {azureml: latest}}", "line 1 (environments.e.azureml): expected a registered environm"),
        ("defaults: {environment: gpu}", "line 1 (defaults.environment): unknown environment 'gpu'; expected one"),
        ("defaults: {retries: -2}", "line 1 (defaults.retries): expected a number >= 0, got -2"),
    ],
)
def test_wrong_targets_environments_and_defaults(repo: Path, section: str, expected: str) -> None:
    problem = _one(repo, f"{section}\nnotebooks: [{{path: train.ipynb}}]\n")
    assert problem.startswith(f"{PLAN}: {expected}"), problem


def test_unknown_target_and_environment_names(repo: Path) -> None:
    problems = _problems(
        repo,
        """\
targets:
  big-gpu: {gpus: 2}
environments:
  cpu: {conda: envs/cpu.yml}
notebooks:
  - glob: "nbs/*.ipynb"
    target: big_gpu
    environment: cpu_env
""",
    )
    assert problems == [
        f"{PLAN}: line 7 (notebooks[0].target): unknown target 'big_gpu' (did you mean 'big-gpu'?); "
        "expected one of: cpu, gpu, big-gpu (or declare it under targets)",
        f"{PLAN}: line 8 (notebooks[0].environment): unknown environment 'cpu_env' (did you mean 'cpu'?); "
        "expected one of: default, cpu (or declare it under environments)",
    ]


def test_notebook_entries_must_name_existing_notebooks(repo: Path) -> None:
    (repo / "notes.md").write_text("# notes\n")
    problems = _problems(repo, "notebooks:\n  - path: nbs\n  - path: notes.md\n  - path: /etc/x.ipynb\n")
    assert problems == [
        f"{PLAN}: line 2 (notebooks[0].path): 'nbs' is a folder; use glob: 'nbs/**' for the notebooks in it",
        f"{PLAN}: line 3 (notebooks[1].path): expected a notebook (.ipynb), got 'notes.md'",
        f"{PLAN}: line 4 (notebooks[2].path): expected a path relative to the plan folder, got the absolute path "
        "'/etc/x.ipynb'",
    ]


# ----------------------------------------------------------------------------------------------------- after


def test_a_cycle_is_reported_with_its_path_where_it_was_written(repo: Path) -> None:
    problem = _one(
        repo,
        """\
notebooks:
  - path: prepare.ipynb
    after: [nbs/b.ipynb]
  - path: train.ipynb
    after: [prepare.ipynb]
  - path: nbs/b.ipynb
    after: [train.ipynb]
""",
    )
    assert problem == (
        f"{PLAN}: line 3 (notebooks[0].after[0]): `after` makes a cycle (each runs after the next): "
        "prepare.ipynb -> nbs/b.ipynb -> train.ipynb -> prepare.ipynb"
    )


def test_a_notebook_naming_itself_is_a_cycle(repo: Path) -> None:
    problem = _one(repo, "notebooks:\n  - path: train.ipynb\n    after: [train.ipynb]\n")
    assert problem.endswith("`after` makes a cycle (each runs after the next): train.ipynb -> train.ipynb")


def test_after_must_name_notebooks_in_the_plan(repo: Path) -> None:
    # nbs/a.ipynb exists but the plan does not include it.
    problem = _one(repo, "notebooks:\n  - path: train.ipynb\n    after: [nbs/a.ipynb]\n")
    assert problem == f"{PLAN}: line 3 (notebooks[0].after[0]): 'nbs/a.ipynb' names no notebook in the plan"


# ---------------------------------------------------------------------------------------- notebook metadata


def test_invalid_notebook_metadata_names_the_notebook_and_key_path(repo: Path) -> None:
    make_notebook(
        repo / "nbs" / "a.ipynb",
        "x = 1",
        metadata={"orchestrator": {"timeout": "soon", "targt": "gpu", "environment": "nope", "path": "x.ipynb"}},
    )
    make_notebook(repo / "nbs" / "b.ipynb", "x = 1", metadata={"orchestrator": ["gpu"]})

    problems = _problems(repo)

    assert sorted(problems) == [
        "repo/nbs/a.ipynb: metadata.orchestrator.environment: unknown environment 'nope'; expected one of: default "
        "(or declare it under environments)",
        # path/glob belong in the plan: metadata settings always apply to their own notebook.
        "repo/nbs/a.ipynb: metadata.orchestrator.path: unknown key 'path'; expected one of: target, environment, "
        "timeout, cell_timeout, retries, kernel, parameters, expect, after, skip, pythonpath, output_limit, "
        "expected_duration, pack",
        "repo/nbs/a.ipynb: metadata.orchestrator.targt: unknown key 'targt' (did you mean 'target'?)",
        "repo/nbs/a.ipynb: metadata.orchestrator.timeout: "
        "expected a duration like 90s, 30m, 2h or a number of seconds, got 'soon'",
        "repo/nbs/b.ipynb: metadata.orchestrator: expected a mapping (key: value), got a list",
    ]


# ------------------------------------------------------------------------------------------ the command line


def test_only_must_match_and_stay_inside_the_root(repo: Path) -> None:
    assert _problems(repo, only=["nothing/**", "../elsewhere/*.ipynb", "/abs/*.ipynb"]) == [
        "--only: 'nothing/**': matches no notebook in the plan",
        "--only: '../elsewhere/*.ipynb': expected a path inside the plan folder, got '../elsewhere/*.ipynb', which "
        "leads out of it",
        "--only: '/abs/*.ipynb': expected a path relative to the plan folder, got the absolute path '/abs/*.ipynb'",
    ]


def test_parameter_names_from_the_command_line_must_be_identifiers(repo: Path) -> None:
    assert _problems(repo, parameters={"learning-rate": 0.1, "class": 1, "ok": 2}) == [
        "--param: learning-rate: expected a parameter name that is a Python identifier",
        "--param: class: expected a parameter name that is a Python identifier",
    ]


def test_validate_plan_raises_the_same_problems(repo: Path) -> None:
    (repo / "orchestrator.yml").write_text("defaults: {timeout: soon}\n")
    with pytest.raises(PlanError) as caught:
        validate_plan(repo)
    assert caught.value.problems == [
        Problem(
            PLAN,
            "line 1 (defaults.timeout)",
            "expected a duration like 90s, 30m, 2h or a number of seconds, got 'soon'",
        )
    ]
