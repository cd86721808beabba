"""Resolving plans: notebook selection, layering of settings, ordering, --only and --param (docs/architecture.md#plan-file)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan import ResolvedPlan, StepSpec, load_plan, validate_plan
from tests.builders import DESIGN_PLAN, make_notebook


def _plan(root: Path, text: str, name: str = "orchestrator.yml") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _repo(root: Path, *notebooks: str, metadata: dict[str, dict[str, Any]] | None = None) -> Path:
    for notebook in notebooks:
        settings = (metadata or {}).get(notebook)
        make_notebook(root / notebook, "x = 1", metadata={"orchestrator": settings} if settings else None)
    return root


def _notebooks(plan: ResolvedPlan) -> list[str]:
    return [step.notebook for step in plan.steps]


def _by_notebook(plan: ResolvedPlan) -> dict[str, StepSpec]:
    return {step.notebook: step for step in plan.steps}


# ----------------------------------------------------------------------------------------------- no plan file


def test_a_folder_without_a_plan_runs_every_notebook_with_defaults(tmp_path: Path) -> None:
    repo = _repo(
        tmp_path / "repo",
        "b.ipynb",
        "a.ipynb",
        "sub/deeper/c.ipynb",
        # never notebooks to run:
        ".ipynb_checkpoints/a-checkpoint.ipynb",
        "sub/.ipynb_checkpoints/c-checkpoint.ipynb",
        ".git/x.ipynb",
        ".hidden/x.ipynb",
        ".venv/lib/x.ipynb",
        "venv/x.ipynb",
        "myenv/x.ipynb",
        "node_modules/pkg/x.ipynb",
        "__pycache__/x.ipynb",
        ".orchestrator/runs/1/steps/a/a.ipynb",
    )
    (repo / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (repo / "notes.txt").write_text("not a notebook")

    plan = load_plan(repo)

    assert _notebooks(plan) == ["a.ipynb", "b.ipynb", "sub/deeper/c.ipynb"]
    assert plan.plan_file is None
    assert plan.root == repo.resolve()
    assert plan.experiment == "repo"
    step = plan.steps[0]
    assert (step.target, step.environment, step.kernel) == ("cpu", "default", "python3")
    assert (step.timeout_s, step.cell_timeout_s, step.retries) == (1800.0, None, 0)
    assert (step.parameters, step.expect, step.after, step.skip) == ({}, {}, (), None)
    assert step.pythonpath == (".",)
    assert step.output_limit_bytes == 2_000_000
    assert step.kernel_required is False
    assert set(plan.targets) == {"cpu", "gpu"}
    assert plan.targets["gpu"].gpus == 1 and plan.targets["cpu"].gpus == 0
    assert set(plan.environments) == {"default"}
    assert plan.warnings == ()


def test_a_notebook_path_is_a_plan_of_that_notebook_rooted_at_its_folder(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "nb/one.ipynb", "nb/two.ipynb", metadata={"nb/one.ipynb": {"timeout": "90s"}})
    _plan(repo / "nb", "notebooks: [{path: two.ipynb}]\n")  # a plan beside it is not used

    plan = load_plan(repo / "nb" / "one.ipynb")

    assert plan.root == (repo / "nb").resolve()
    assert plan.plan_file is None
    assert [(s.id, s.notebook, s.timeout_s) for s in plan.steps] == [("one", "one.ipynb", 90.0)]


def test_a_plan_file_path_and_the_plan_file_option_choose_the_plan(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a.ipynb", "b.ipynb")
    _plan(repo, "notebooks: [{path: a.ipynb}]\n")
    other = _plan(repo, "notebooks: [{path: b.ipynb}]\n", name="ci.yaml")

    assert _notebooks(load_plan(repo)) == ["a.ipynb"]
    assert _notebooks(load_plan(other)) == ["b.ipynb"]
    assert _notebooks(load_plan(repo, plan_file=other)) == ["b.ipynb"]
    assert load_plan(other).plan_file == other.resolve()


def test_orchestrator_yaml_is_found_too(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a.ipynb", "b.ipynb")
    _plan(repo, "notebooks: [{path: b.ipynb}]\n", name="orchestrator.yaml")
    assert _notebooks(load_plan(repo)) == ["b.ipynb"]


def test_with_both_plan_names_the_yml_wins_with_a_warning(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a.ipynb", "b.ipynb")
    _plan(repo, "notebooks: [{path: a.ipynb}]\n")
    _plan(repo, "notebooks: [{path: b.ipynb}]\n", name="orchestrator.yaml")
    plan = load_plan(repo)
    assert _notebooks(plan) == ["a.ipynb"]
    assert len(plan.warnings) == 1 and "orchestrator.yml and orchestrator.yaml" in plan.warnings[0]


def test_a_plan_without_notebooks_key_runs_every_notebook_with_its_defaults(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a.ipynb", "sub/b.ipynb")
    _plan(repo, "experiment: nightly\ndefaults: {timeout: 1h30m, retries: 2, parameters: {seed: 7}}\n")

    plan = load_plan(repo)

    assert plan.experiment == "nightly"
    assert _notebooks(plan) == ["a.ipynb", "sub/b.ipynb"]
    assert {(s.timeout_s, s.retries, json.dumps(s.parameters)) for s in plan.steps} == {(5400.0, 2, '{"seed": 7}')}


# ------------------------------------------------------------- the example plan of docs/architecture.md#plan-file



def _design_repo(root: Path) -> Path:
    _repo(
        root,
        "examples/01_train.ipynb",
        "examples/00_prepare.ipynb",
        "examples/03_gpu.ipynb",
        "examples/scratch/idea.ipynb",
        "examples/scratch/deep/older.ipynb",
        "elsewhere/not_in_plan.ipynb",
    )
    (root / "environments").mkdir()
    (root / "environments" / "cpu.yml").write_text("name: cpu\n")
    (root / "environments" / "gpu.yml").write_text("name: gpu\n")
    _plan(root, DESIGN_PLAN)
    return root


def test_the_design_plan_resolves(tmp_path: Path) -> None:
    plan = load_plan(_design_repo(tmp_path))

    assert plan.experiment == "recommenders-notebooks"
    # Glob matches sorted, then 00_prepare moved before 01_train only because of `after`.
    assert _notebooks(plan) == [
        "examples/00_prepare.ipynb",
        "examples/01_train.ipynb",
        "examples/03_gpu.ipynb",
        "examples/scratch/deep/older.ipynb",
        "examples/scratch/idea.ipynb",
    ]
    steps = _by_notebook(plan)
    train = steps["examples/01_train.ipynb"]
    assert train.id == "examples_01_train"
    assert train.parameters == {"epochs": 1}
    assert train.expect == {"accuracy": ">= 0.9"}
    assert train.after == ("examples_00_prepare",)
    assert (train.target, train.environment, train.timeout_s, train.cell_timeout_s) == ("cpu", "cpu", 1800.0, 600.0)
    gpu = steps["examples/03_gpu.ipynb"]
    assert (gpu.target, gpu.environment) == ("gpu", "gpu")
    assert steps["examples/scratch/idea.ipynb"].skip == "work in progress"
    assert steps["examples/scratch/deep/older.ipynb"].skip == "work in progress"
    assert steps["examples/00_prepare.ipynb"].skip is None

    assert plan.targets["cpu"].azureml_compute == "cpu-cluster"
    assert plan.targets["cpu"].local_slots is None
    assert plan.targets["gpu"].gpus == 1
    spot = plan.targets["spot"]
    assert (spot.azureml_compute, spot.azureml_instance_type, spot.local_slots, spot.gpus) == (
        None,
        "Standard_NC6s_v3",
        2,
        1,
    )
    assert plan.environments["cpu"].conda == "environments/cpu.yml"
    assert plan.environments["gpu"].image is not None and "cuda" in plan.environments["gpu"].image
    assert plan.environments["registered"].azureml == "recommenders-gpu:3"
    assert "default" in plan.environments  # built in, even when others are declared
    assert plan.secret_env == ("MY_TOKEN",)
    assert plan.warnings == ()


def test_the_resolved_plan_survives_plan_json(tmp_path: Path) -> None:
    plan = load_plan(_design_repo(tmp_path))
    text = json.dumps(plan.to_json())
    assert ResolvedPlan.from_json(json.loads(text)) == plan


# ----------------------------------------------------------------------------------------- layering settings


def test_later_entries_override_key_by_key_and_parameters_and_expect_merge(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "nbs/a.ipynb", "nbs/b.ipynb", "nbs/prep.ipynb", "nbs/setup.ipynb")
    _plan(
        repo,
        """\
defaults: {parameters: {seed: 1, size: small}}
notebooks:
  - glob: "nbs/*.ipynb"
    timeout: 10m
    retries: 1
    parameters: {epochs: 5, lr: 0.1}
    expect: {accuracy: ">= 0.8", loss: "< 2"}
    after: [nbs/setup.ipynb]
  - path: nbs/a.ipynb
    timeout: 2h
    parameters: {epochs: 1}
    expect: {accuracy: ">= 0.9"}
    after: [nbs/prep.ipynb]
    kernel: conda-env-x
""",
    )

    steps = _by_notebook(load_plan(repo))

    a = steps["nbs/a.ipynb"]
    assert a.timeout_s == 7200.0  # replaced by the later entry
    assert a.retries == 1  # kept from the earlier entry: the later one does not write it
    assert a.parameters == {"seed": 1, "size": "small", "epochs": 1, "lr": 0.1}
    assert a.expect == {"accuracy": ">= 0.9", "loss": "< 2"}
    assert set(a.after) == {"nbs_setup", "nbs_prep"}  # accumulated
    assert (a.kernel, a.kernel_required) == ("conda-env-x", True)
    b = steps["nbs/b.ipynb"]
    assert (b.timeout_s, b.parameters["epochs"], b.kernel, b.kernel_required) == (600.0, 5, "python3", False)
    # The glob's `after` names setup itself, which does not make setup wait on itself.
    assert steps["nbs/setup.ipynb"].after == ()
    assert steps["nbs/prep.ipynb"].after == ("nbs_setup",)


def test_skip_with_a_reason_with_true_and_undone_by_false(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "wip/a.ipynb", "wip/b.ipynb", "done.ipynb")
    _plan(
        repo,
        """\
notebooks:
  - path: done.ipynb
    skip: true
  - glob: "wip/**"
    skip: "  waiting for data  "
  - path: wip/b.ipynb
    skip: false
""",
    )

    steps = _by_notebook(load_plan(repo))

    assert steps["done.ipynb"].skip == "skipped by the plan"
    assert steps["wip/a.ipynb"].skip == "waiting for data"
    assert steps["wip/b.ipynb"].skip is None


def test_notebook_metadata_settings_sit_between_defaults_and_plan_entries(tmp_path: Path) -> None:
    repo = _repo(
        tmp_path,
        "a.ipynb",
        "b.ipynb",
        metadata={
            "a.ipynb": {
                "target": "gpu",
                "timeout": "5m",
                "kernel": "ir",
                "parameters": {"epochs": 3, "lr": 0.5},
                "expect": {"rmse": "< 1"},
                "after": ["b.ipynb"],
                "skip": "needs a GPU quota",
            },
        },
    )
    _plan(
        repo,
        """\
defaults: {timeout: 1h, cell_timeout: 1m, parameters: {seed: 0}}
notebooks:
  - glob: "*.ipynb"
  - path: a.ipynb
    timeout: 20m
    parameters: {epochs: 1}
""",
    )

    steps = _by_notebook(load_plan(repo))

    a = steps["a.ipynb"]
    assert a.timeout_s == 1200.0  # plan entry > metadata
    assert a.cell_timeout_s == 60.0  # defaults, untouched by both
    assert (a.target, a.kernel, a.kernel_required) == ("gpu", "ir", True)  # metadata > defaults
    assert a.parameters == {"seed": 0, "epochs": 1, "lr": 0.5}
    assert a.expect == {"rmse": "< 1"}
    assert a.after == ("b",)
    assert a.skip == "needs a GPU quota"
    assert _notebooks(load_plan(repo)) == ["b.ipynb", "a.ipynb"]
    assert steps["b.ipynb"].timeout_s == 3600.0


def test_metadata_applies_without_a_plan_file(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "gpu.ipynb", "cpu.ipynb", metadata={"gpu.ipynb": {"target": "gpu", "retries": 2}})
    steps = _by_notebook(load_plan(repo))
    assert (steps["gpu.ipynb"].target, steps["gpu.ipynb"].retries) == ("gpu", 2)
    assert (steps["cpu.ipynb"].target, steps["cpu.ipynb"].retries) == ("cpu", 0)


def test_timeouts_sizes_and_pythonpath(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a.ipynb", "b.ipynb")
    (repo / "src").mkdir()
    _plan(
        repo,
        """\
defaults: {timeout: 45, output_limit: 500kB, pythonpath: [".", "./src/"]}
notebooks:
  - path: a.ipynb
    timeout: null
    cell_timeout: 1.5m
    output_limit: 1MiB
  - path: b.ipynb
    pythonpath: [src]
""",
    )

    steps = _by_notebook(load_plan(repo))

    assert (steps["a.ipynb"].timeout_s, steps["a.ipynb"].cell_timeout_s) == (None, 90.0)
    assert steps["a.ipynb"].output_limit_bytes == 1024 * 1024
    assert steps["a.ipynb"].pythonpath == (".", "src")
    assert (steps["b.ipynb"].timeout_s, steps["b.ipynb"].output_limit_bytes) == (45.0, 500_000)
    assert steps["b.ipynb"].pythonpath == ("src",)


# -------------------------------------------------------------------------------------------------- ordering


def test_after_orders_steps_and_otherwise_keeps_the_plan_order(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a.ipynb", "b.ipynb", "c.ipynb", "d.ipynb", "e.ipynb")
    _plan(
        repo,
        """\
notebooks:
  - path: e.ipynb
  - path: d.ipynb
    after: [b.ipynb]
  - path: c.ipynb
  - path: b.ipynb
    after: [a.ipynb]
  - path: a.ipynb
""",
    )

    plan = load_plan(repo)

    assert _notebooks(plan) == ["e.ipynb", "c.ipynb", "a.ipynb", "b.ipynb", "d.ipynb"]
    assert plan.step("d").after == ("b",)


def test_after_accepts_globs_and_folders(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "prep/1.ipynb", "prep/2.ipynb", "report.ipynb", "train.ipynb")
    _plan(
        repo,
        """\
notebooks:
  - glob: "**/*.ipynb"
  - path: train.ipynb
    after: ["prep/*.ipynb"]
  - path: report.ipynb
    after: [prep, train.ipynb]
""",
    )

    plan = load_plan(repo)

    assert plan.step("train").after == ("prep_1", "prep_2")
    assert plan.step("report").after == ("prep_1", "prep_2", "train")
    assert _notebooks(plan) == ["prep/1.ipynb", "prep/2.ipynb", "train.ipynb", "report.ipynb"]


LONG = f"{'a' * 100}/{'b' * 100}/{'c' * 100}.ipynb"  # each part within file system limits, 302 in all


def test_step_ids_are_stable_slugs_unique_and_valid_node_names(tmp_path: Path) -> None:
    repo = _repo(
        tmp_path,
        "Examples/01 Train-Model.ipynb",
        "examples/01_train_model.ipynb",
        "2024/report.ipynb",
        "_private/x.ipynb",
        LONG,
    )

    plan = load_plan(repo)

    ids = {step.notebook: step.id for step in plan.steps}
    # Sorted path order decides who gets the plain slug: "Examples/..." sorts before "examples/...".
    assert ids["Examples/01 Train-Model.ipynb"] == "examples_01_train_model"
    assert ids["examples/01_train_model.ipynb"] == "examples_01_train_model_2"
    assert ids["2024/report.ipynb"] == "nb_2024_report"
    assert ids["_private/x.ipynb"] == "private_x"
    assert len(ids[LONG]) == 255
    for step_id in ids.values():
        assert step_id[0].isalpha() and step_id.replace("_", "a").isalnum() and step_id.islower()


# ----------------------------------------------------------------------------------------- --only and --param


def _pipeline_repo(root: Path) -> Path:
    _repo(root, "data/download.ipynb", "data/prepare.ipynb", "train.ipynb", "evaluate.ipynb", "other.ipynb")
    _plan(
        root,
        """\
notebooks:
  - glob: "**/*.ipynb"
  - path: data/prepare.ipynb
    after: [data/download.ipynb]
  - path: train.ipynb
    after: [data/prepare.ipynb]
  - path: evaluate.ipynb
    after: [train.ipynb]
""",
    )
    return root


def test_only_keeps_the_matches_and_everything_they_come_after(tmp_path: Path) -> None:
    repo = _pipeline_repo(tmp_path)

    plan = load_plan(repo, only=["train.ipynb"])

    assert _notebooks(plan) == ["data/download.ipynb", "data/prepare.ipynb", "train.ipynb"]
    assert _notebooks(load_plan(repo, only=["other.ipynb", "data/*"])) == [
        "data/download.ipynb",
        "data/prepare.ipynb",
        "other.ipynb",
    ]


def test_only_does_not_change_step_ids(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "a-b.ipynb", "a_b.ipynb")
    full = {step.notebook: step.id for step in load_plan(repo).steps}
    assert full == {"a-b.ipynb": "a_b", "a_b.ipynb": "a_b_2"}
    assert [step.id for step in load_plan(repo, only=["a_b.ipynb"]).steps] == ["a_b_2"]


def test_command_line_parameters_merge_over_every_step(tmp_path: Path) -> None:
    repo = _pipeline_repo(tmp_path)
    _plan(repo, "defaults: {parameters: {epochs: 10, seed: 1}}\nnotebooks: [{glob: '*.ipynb'}]\n")

    plan = load_plan(repo, parameters={"epochs": 1, "tag": "smoke"})

    assert {json.dumps(step.parameters, sort_keys=True) for step in plan.steps} == {
        json.dumps({"epochs": 1, "seed": 1, "tag": "smoke"}, sort_keys=True)
    }


# -------------------------------------------------------------------------------------------------- warnings


def test_a_glob_matching_nothing_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    repo = _repo(tmp_path / "repo", "a.ipynb")
    _plan(repo, "notebooks:\n  - path: a.ipynb\n  - glob: 'nothing/**'\n")

    plan = validate_plan(repo)

    assert _notebooks(plan) == ["a.ipynb"]
    assert plan.warnings == ("repo/orchestrator.yml: line 3 (notebooks[1].glob): 'nothing/**' matches no notebook",)


def test_an_unreadable_notebook_is_left_for_the_step_to_report(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "good.ipynb")
    (repo / "broken.ipynb").write_text("{ not json")

    plan = load_plan(repo)

    assert _notebooks(plan) == ["broken.ipynb", "good.ipynb"]
    assert len(plan.warnings) == 1 and "broken.ipynb" in plan.warnings[0]


# ----------------------------------------------------------------------------------------------------- speed


def test_three_hundred_notebooks_resolve_quickly(tmp_path: Path) -> None:
    repo = tmp_path / "big"
    for index in range(300):
        settings = {"orchestrator": {"timeout": "5m", "parameters": {"i": index}}} if index % 3 == 0 else None
        make_notebook(repo / f"group_{index % 10}" / f"nb_{index:03d}.ipynb", "x = 1", "y = 2", metadata=settings)
    _plan(
        repo,
        """\
notebooks:
  - glob: "**/*.ipynb"
  - glob: "group_1/*.ipynb"
    target: gpu
    after: ["group_0/*.ipynb"]
  - glob: "group_9/**"
    skip: slow
""",
    )

    started = time.perf_counter()
    plan = load_plan(repo)
    elapsed = time.perf_counter() - started

    print(f"resolved {len(plan.steps)} notebooks in {elapsed * 1000:.0f} ms")
    assert len(plan.steps) == 300
    assert elapsed < 5.0
