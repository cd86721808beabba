"""The code snapshot: which files ship, and that an unchanged tree gives Azure ML the same snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pathspec")

from orchestrator.azureml.snapshot import (  # noqa: E402
    MARKER,
    RUNTIME_DIR,
    iter_files,
    notebook_snapshot,
    report_snapshot,
    repository_root,
)
from tests.azureml_support import make_repo  # noqa: E402


def shipped(root: Path) -> set[str]:
    return {rel for _, rel in iter_files(root)}


def write(path: Path, text: str = "x\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_built_in_ignores_and_nested_gitignores(tmp_path: Path) -> None:
    plan_root = make_repo(tmp_path / "repo")
    files = shipped(tmp_path / "repo")
    assert "notebooks/data/00_prepare.ipynb" in files and "environments/cpu.yml" in files
    assert "notebooks/nbutils.py" in files and "notebooks/.gitignore" in files
    assert "notebooks/data/output/big.csv" not in files  # notebooks/.gitignore: data/output/
    assert "notebooks/run.log" not in files  # root .gitignore: *.log applies below it
    for left_out in (".git/HEAD", ".venv/pyvenv.cfg", "myenv/pyvenv.cfg", "notebooks/.orchestrator/runs/results.json",
                     "notebooks/.ipynb_checkpoints/wip-checkpoint.ipynb"):
        assert left_out not in files
    assert repository_root(plan_root) == (tmp_path / "repo").resolve()


def test_amlignore_takes_precedence_and_negation_reincludes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root / ".gitignore", "*.csv\n")
    write(root / ".amlignore", "*.csv\n!keep.csv\nsecret/\n")
    for name in ("a.csv", "keep.csv", "sub/keep.csv", "secret/key.txt", "data.parquet", "x/__pycache__/m.pyc", "m.pyc"):
        write(root / name)
    files = shipped(root)
    assert files == {".gitignore", ".amlignore", "keep.csv", "sub/keep.csv", "data.parquet"}


def test_a_deeper_ignore_file_overrides_its_parent(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root / ".gitignore", "*.json\n")
    write(root / "keep" / ".gitignore", "!*.json\n")
    write(root / "a.json")
    write(root / "keep" / "b.json")
    assert shipped(root) == {".gitignore", "keep/.gitignore", "keep/b.json"}


def test_staging_is_content_addressed_and_azure_ml_hashes_it_the_same(tmp_path: Path) -> None:
    from azure.ai.ml._utils._asset_utils import get_content_hash, get_ignore_file  # what the SDK uploads by

    make_repo(tmp_path / "repo")
    first = notebook_snapshot(tmp_path / "repo", tmp_path / "cache")
    again = notebook_snapshot(tmp_path / "repo", tmp_path / "cache")
    assert first.path == again.path and (first.path / MARKER).is_file()
    assert (first.path / ".amlignore").is_file()  # stops the SDK re-applying the copied root .gitignore
    assert (first.path / RUNTIME_DIR / "steps" / "azureml_step.py").is_file()
    assert (first.path / RUNTIME_DIR / "steps" / "mlflow_log.py").is_file()
    assert get_content_hash(first.path, get_ignore_file(first.path)) == get_content_hash(again.path, get_ignore_file(again.path))

    write(tmp_path / "repo" / "notebooks" / "nbutils.py", "def helper():\n    return 2\n")
    changed = notebook_snapshot(tmp_path / "repo", tmp_path / "cache")
    assert changed.path != first.path
    # A file that is ignored does not change the snapshot.
    write(tmp_path / "repo" / "notebooks" / "data" / "output" / "new.csv")
    assert notebook_snapshot(tmp_path / "repo", tmp_path / "cache").path == changed.path


def test_a_staged_snapshot_inside_the_repository_is_never_shipped_again(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root / "a.py")
    inner = notebook_snapshot(root, root / "build" / "snapshots")  # a cache inside the tree, not ignored
    assert inner.files >= 1
    assert not any(rel.startswith("build/") for rel in shipped(root))


def test_the_report_snapshot_ships_the_orchestrator_package_and_the_report_script(tmp_path: Path) -> None:
    snapshot = report_snapshot(tmp_path / "cache")
    for rel in ("steps/report_step.py", "orchestrator/__init__.py", "orchestrator/azureml/finalize.py",
                "orchestrator/report/__init__.py", "orchestrator/results.py"):
        assert (snapshot.path / rel).is_file(), rel
    assert not list(snapshot.path.rglob("__pycache__"))
