"""The bundled examples repository is well formed: checked without starting a kernel.

`make run` executes examples/ through the orchestrator; these tests keep the files it relies on honest
(valid nbformat 4.5 notebooks with cleared outputs and a python3 kernelspec, a plan that names notebooks
that exist, parameters the notebooks declare) and check that nbutils.glue writes scrapbook's payload.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import nbformat
import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLAN = EXAMPLES / "orchestrator.yml"
NOTEBOOKS = sorted(
    path
    for path in EXAMPLES.rglob("*.ipynb")
    if ".ipynb_checkpoints" not in path.parts and "output" not in path.relative_to(EXAMPLES).parts
)


def _rel(path: Path) -> str:
    return path.relative_to(EXAMPLES).as_posix()


def _plan() -> dict[str, Any]:
    with PLAN.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    assert isinstance(data, dict)
    return data


def _plan_entries(key: str) -> list[dict[str, Any]]:
    return [entry for entry in _plan()["notebooks"] if key in entry]


def _parameter_names(notebook: nbformat.NotebookNode) -> set[str]:
    """Names assigned in the notebook's `parameters` cell (empty when it has none)."""
    names: set[str] = set()
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def test_the_examples_hold_the_expected_notebooks() -> None:
    names = {_rel(path) for path in NOTEBOOKS}
    assert {
        "data/00_prepare_ratings.ipynb",
        "recommenders/01_item_similarity.ipynb",
        "models/02_train_classifier.ipynb",
        "models/03_parameterised.ipynb",
        "reports/04_plot.ipynb",
        "gpu/05_gpu_check.ipynb",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_rel)
def test_notebook_is_valid_cleared_and_names_python3(path: Path) -> None:
    notebook = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5), "nbformat 4.5 or later, with cell ids"
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown", "each example opens with a short markdown intro"
    ids = [cell.get("id") for cell in notebook.cells]
    assert all(ids) and len(set(ids)) == len(ids), "every cell has a unique id"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {index} has an execution count"


def test_plan_names_only_notebooks_that_exist() -> None:
    plan = _plan()
    assert plan["version"] == 1
    assert plan["notebooks"][0] == {"glob": "**/*.ipynb"}, "the catch-all glob comes first"
    for entry in _plan_entries("path"):
        assert (EXAMPLES / entry["path"]).is_file(), entry["path"]
        for earlier in entry.get("after", []):
            assert (EXAMPLES / earlier).is_file(), earlier
    for entry in _plan_entries("glob"):
        assert list(EXAMPLES.glob(entry["glob"])), f"glob {entry['glob']!r} matches nothing"


def test_plan_targets_environments_and_skips() -> None:
    plan = _plan()
    by_path = {entry["path"]: entry for entry in _plan_entries("path")}
    assert by_path["gpu/05_gpu_check.ipynb"]["target"] == "gpu"
    assert plan["targets"]["gpu"]["gpus"] == 1
    for name, environment in plan["environments"].items():
        conda = (EXAMPLES / environment["conda"]).resolve()
        assert conda.is_file(), f"environment {name}: {environment['conda']} is missing"
        # The repository's shared step environments (issue 3), read when the pipeline is compiled.
        assert conda.parent == EXAMPLES.parent / "environments", f"environment {name}: not the shared file"
        assert "python=3.11" in yaml.safe_load(conda.read_text(encoding="utf-8"))["dependencies"]
    assert [entry["skip"] for entry in _plan_entries("skip")] == ["work in progress"]
    for entry in _plan_entries("expect"):
        for metric, rule in entry["expect"].items():
            assert rule.split()[0] in {">=", ">", "<=", "<", "=="}, f"{entry['path']}: {metric}: {rule}"


def test_plan_parameters_are_declared_by_their_notebooks() -> None:
    entries = _plan_entries("parameters")
    assert entries
    for entry in entries:
        declared = _parameter_names(nbformat.read(str(EXAMPLES / entry["path"]), as_version=4))
        assert set(entry["parameters"]) <= declared, f"{entry['path']} declares only {sorted(declared)}"


def test_parameterised_notebook_declares_several_types() -> None:
    notebook = nbformat.read(str(EXAMPLES / "models/03_parameterised.ipynb"), as_version=4)
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    values: dict[str, Any] = {}
    exec(cells[0].source, {}, values)  # literals only: safe, and proves the cell runs standalone
    assert {type(value) for value in values.values()} >= {int, float, str, list}


def test_plot_notebook_carries_orchestrator_metadata() -> None:
    notebook = nbformat.read(str(EXAMPLES / "reports/04_plot.ipynb"), as_version=4)
    assert notebook.metadata["orchestrator"] == {"timeout": "5m"}


def _load_nbutils() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_nbutils", EXAMPLES / "nbutils.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_glue_emits_scrapbooks_json_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    np = pytest.importorskip("numpy")
    nbutils = _load_nbutils()
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(nbutils, "display", lambda *args, **kwargs: calls.append((args, kwargs)))

    nbutils.glue("accuracy", np.float64(0.93))
    nbutils.glue("sizes", [1, 2])

    # The exact call scrapbook 0.5 makes for glue(name, value, encoder="json") (scrapbook/api.py).
    assert calls[0] == (
        ({"application/scrapbook.scrap.json+json": {"name": "accuracy", "data": 0.93, "encoder": "json", "version": 1}},),
        {"metadata": {"scrapbook": {"name": "accuracy", "data": True, "display": False}}, "raw": True},
    )
    payload = calls[0][0][0]["application/scrapbook.scrap.json+json"]
    assert type(payload["data"]) is float, "numpy scalars become plain JSON values"
    assert calls[1][0][0]["application/scrapbook.scrap.json+json"]["data"] == [1, 2]
    json.dumps(calls)  # the whole display call is JSON


def test_glue_refuses_values_json_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    nbutils = _load_nbutils()
    monkeypatch.setattr(nbutils, "display", lambda *args, **kwargs: pytest.fail("nothing may be displayed"))
    with pytest.raises(ValueError):
        nbutils.glue("loss", math.nan)
    with pytest.raises(TypeError):
        nbutils.glue("when", object())


def test_files_go_through_step_folders_under_the_orchestrator_and_data_output_by_hand(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nbutils = _load_nbutils()
    monkeypatch.setenv("ORCHESTRATOR_STEP_OUTPUT", str(tmp_path / "mine"))
    monkeypatch.setenv("ORCHESTRATOR_AFTER_OUTPUTS", json.dumps({"data/00_prepare_ratings.ipynb": str(tmp_path / "prep")}))
    assert nbutils.output_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()
    assert nbutils.input_dir("data/00_prepare_ratings.ipynb") == tmp_path / "prep"
    monkeypatch.delenv("ORCHESTRATOR_AFTER_OUTPUTS")
    assert nbutils.input_dir("data/00_prepare_ratings.ipynb") == nbutils.OUTPUT_DIR
    # The notebooks that read 00's files ask for them by that notebook's path, as the plan's `after` names it.
    for reader in ("recommenders/01_item_similarity.ipynb", "reports/04_plot.ipynb"):
        source = "".join(cell.source for cell in nbformat.read(EXAMPLES / reader, as_version=4).cells)
        assert 'nbutils.input_dir("data/00_prepare_ratings.ipynb")' in source, reader
