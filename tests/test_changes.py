"""Change-aware selection (`--changed-since REF`): a small repository with its own package, notebooks that
import it, data read by literal paths and `after` chains, through a series of commits. For each, the
selection `validate --changed-since main --json` prints equals the expected set, and the reasons name the
change. No kernels here (one end-to-end `run` lives in test_changes_run.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.main import main
from tests.builders import make_notebook

PLAN = """\
version: 1
environments:
  science: {conda: environments/science.yml}
defaults:
  timeout: 10m
notebooks:
  - glob: "notebooks/*.ipynb"
  - path: notebooks/01_features.ipynb
    after: [notebooks/00_load.ipynb]
  - path: notebooks/02_train.ipynb
    after: [notebooks/01_features.ipynb]
    parameters: {epochs: 2}
  - path: notebooks/03_report.ipynb
    after: [notebooks/02_train.ipynb]
  - path: notebooks/05_alone.ipynb
    environment: science
    timeout: 5m
"""

NOTEBOOKS = ["notebooks/00_load.ipynb", "notebooks/01_features.ipynb", "notebooks/02_train.ipynb",
             "notebooks/03_report.ipynb", "notebooks/04_prices.ipynb", "notebooks/05_alone.ipynb",
             "notebooks/06_dynamic.ipynb"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


def write(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text, encoding="utf-8")


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main: the base commit; then a `feature` branch checked out. Built once, copied for each test."""
    repo = tmp_path_factory.mktemp("template") / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    write(repo, "orchestrator.yml", PLAN)
    write(repo, "src/shop/__init__.py", "")
    write(repo, "src/shop/features.py", "from shop import util\n\ndef build():\n    return util.clean()\n")
    write(repo, "src/shop/util.py", "def clean():\n    return 1\n")
    write(repo, "src/shop/plugins/__init__.py", "")
    write(repo, "src/shop/plugins/csv.py", "FORMAT = 'csv'\n")
    write(repo, "data/sales.csv", "day,sales\n1,10\n")
    write(repo, "data/prices.csv", "item,price\na,1\n")
    write(repo, "config/settings.yml", "epochs: 2\n")
    write(repo, "environments/science.yml", "dependencies: [python=3.11]\n")
    write(repo, "notebooks/helpers.py", "SCALE = 2\n")
    make_notebook(repo / NOTEBOOKS[0], 'import pandas as pd\nsales = pd.read_csv("../data/sales.csv")')
    make_notebook(repo / NOTEBOOKS[1], "import sys\nsys.path.append('../src')",
                  "from shop.features import build\nbuild()")
    make_notebook(repo / NOTEBOOKS[2], 'import json\nfrom pathlib import Path\n'
                  'settings = (Path("config") / "settings.yml").read_text()', parameters="epochs = 1")
    make_notebook(repo / NOTEBOOKS[3], "%run helpers.py\n!ls -l\nprint(SCALE)", "%%bash\necho done")
    make_notebook(repo / NOTEBOOKS[4], 'import importlib\nkind = input()',
                  'plugin = importlib.import_module(f"shop.plugins.{kind}")\n'
                  'table_name = input()',
                  'table = open(f"../data/{table_name}")')
    make_notebook(repo / NOTEBOOKS[5], "import os\nprint(os.getcwd())")
    make_notebook(repo / NOTEBOOKS[6], "name = input()\nmodule = __import__(name)")
    commit(repo, "base")
    git(repo, "checkout", "-q", "-b", "feature")
    return repo


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(template, tmp_path / "shop", symlinks=True))


def orchestrator(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main([str(arg) for arg in args])
    out = capsys.readouterr()
    return int(exited.value.code or 0), out.out, out.err


def selection(capsys: pytest.CaptureFixture[str], repo: Path, ref: str = "main") -> dict[str, Any]:
    code, out, err = orchestrator(capsys, "validate", repo, "--changed-since", ref, "--json")
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def selected(data: dict[str, Any]) -> dict[str, list[str]]:
    return {item["notebook"]: item["reasons"] for item in data["selected"]}


def not_selected(data: dict[str, Any]) -> dict[str, str]:
    return {item["notebook"]: item["reason"] for item in data["not_selected"]}


def test_no_change_selects_nothing_and_the_json_has_the_documented_shape(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = selection(capsys, repo)
    assert set(data) == {"ref", "base", "selected", "not_selected"}
    assert data["ref"] == "main" and data["base"] == git(repo, "rev-parse", "main").strip()
    assert data["selected"] == []
    assert not_selected(data) == {notebook: "unchanged since main" for notebook in NOTEBOOKS}


def test_a_module_imported_through_another_selects_the_notebook_and_what_comes_after(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "src/shop/util.py", "def clean():\n    return 2\n")
    commit(repo, "util")
    data = selection(capsys, repo)
    chosen = selected(data)
    assert list(chosen) == NOTEBOOKS[1:4] + [NOTEBOOKS[6]]
    assert chosen[NOTEBOOKS[1]] == [
        "imports shop.features (cell 2, line 1), which imports shop.util (src/shop/features.py line 1): "
        "src/shop/util.py changed"]
    assert chosen[NOTEBOOKS[2]] == ["comes after notebooks/01_features.ipynb, which is selected"]
    # A dynamic import could load any module: selected to be safe, and says so.
    assert chosen[NOTEBOOKS[6]] == ["imports a module named at run time (cell 1, line 2), which could be any: "
                                    "src/shop/util.py changed"]
    # What a selected notebook comes after still runs; nothing it depends on changed.
    assert not_selected(data)[NOTEBOOKS[0]] == "unchanged since main"
    assert not_selected(data)[NOTEBOOKS[5]] == "unchanged since main"


def test_data_read_by_a_literal_path_relative_to_the_notebook(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "data/sales.csv", "day,sales\n1,11\n")
    commit(repo, "more sales")
    chosen = selected(selection(capsys, repo))
    assert list(chosen) == NOTEBOOKS[:5]
    assert chosen[NOTEBOOKS[0]] == ["names '../data/sales.csv' (cell 1, line 2): data/sales.csv changed"]
    # 04 opens a file of data/ whose name it computes: it could be this one.
    assert chosen[NOTEBOOKS[4]] == ["names a path built at run time, '../data/*' (cell 3, line 1): "
                                    "data/sales.csv changed"]


def test_a_config_named_relative_to_the_repository_root(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "config/settings.yml", "epochs: 3\n")
    commit(repo, "config")
    chosen = selected(selection(capsys, repo))
    assert list(chosen) == NOTEBOOKS[2:4]
    assert chosen[NOTEBOOKS[2]] == ["names 'config/settings.yml' (cell 2, line 3): config/settings.yml changed"]


def test_a_script_run_with_percent_run(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "notebooks/helpers.py", "SCALE = 3\n")
    commit(repo, "helpers")
    chosen = selected(selection(capsys, repo))
    assert chosen[NOTEBOOKS[3]] == ["runs 'helpers.py' (cell 1, line 1): notebooks/helpers.py changed"]
    # helpers.py is importable from the notebooks' folder, so a computed import could load it too.
    assert list(chosen) == [NOTEBOOKS[3], NOTEBOOKS[6]]


def test_paths_and_imports_built_at_run_time_select_what_they_could_name(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "data/prices.csv", "item,price\na,2\n")
    commit(repo, "prices")
    chosen = selected(selection(capsys, repo))
    assert list(chosen) == [NOTEBOOKS[4]]
    assert chosen[NOTEBOOKS[4]] == ["names a path built at run time, '../data/*' (cell 3, line 1): "
                                    "data/prices.csv changed"]

    write(repo, "src/shop/plugins/csv.py", "FORMAT = 'CSV'\n")
    commit(repo, "plugin")
    chosen = selected(selection(capsys, repo))
    assert chosen[NOTEBOOKS[4]] == [
        "names a path built at run time, '../data/*' (cell 3, line 1): data/prices.csv changed",
        "imports a module of shop.plugins named at run time (cell 2, line 1): src/shop/plugins/csv.py changed"]
    assert NOTEBOOKS[1] not in chosen  # it imports shop.features and shop.util, not the plugins


def test_plan_settings_compared_resolved_per_notebook(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = PLAN.replace("parameters: {epochs: 2}", "parameters: {epochs: 3}")
    # A new default that 05_alone's own entry overrides changes nothing for it.
    plan = plan.replace("timeout: 10m", "timeout: 20m")
    write(repo, "orchestrator.yml", plan)
    commit(repo, "settings")
    chosen = selected(selection(capsys, repo))
    assert NOTEBOOKS[5] not in chosen
    assert chosen[NOTEBOOKS[2]] == ["its settings in orchestrator.yml changed: timeout, parameters",
                                    "comes after notebooks/01_features.ipynb, which is selected"]
    assert chosen[NOTEBOOKS[0]] == ["its settings in orchestrator.yml changed: timeout"]


def test_notebook_metadata_and_the_environment_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_notebook(repo / NOTEBOOKS[6], "name = input()\nmodule = __import__(name)",
                  metadata={"orchestrator": {"retries": 2}})
    write(repo, "environments/science.yml", "dependencies: [python=3.12]\n")
    commit(repo, "metadata and environment")
    chosen = selected(selection(capsys, repo))
    assert chosen == {
        NOTEBOOKS[5]: ["its environment 'science': environments/science.yml changed"],
        NOTEBOOKS[6]: ["notebooks/06_dynamic.ipynb changed", "its settings changed: retries"],
    }


def test_renames_and_deletions_are_named(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(repo, "mv", "src/shop/util.py", "src/shop/tools.py")
    write(repo, "src/shop/features.py", "from shop import tools\n\ndef build():\n    return tools.clean()\n")
    git(repo, "rm", "-q", "data/sales.csv")
    git(repo, "mv", NOTEBOOKS[5], "notebooks/05_renamed.ipynb")
    write(repo, "orchestrator.yml", PLAN.replace("05_alone", "05_renamed"))
    commit(repo, "renames")
    chosen = selected(selection(capsys, repo))
    assert chosen[NOTEBOOKS[0]] == ["names '../data/sales.csv' (cell 1, line 2): data/sales.csv deleted"]
    assert chosen["notebooks/05_renamed.ipynb"] == ["notebooks/05_renamed.ipynb renamed from notebooks/05_alone.ipynb"]
    features = chosen[NOTEBOOKS[1]]
    assert "imports shop.features (cell 2, line 1): src/shop/features.py changed" in features
    assert ("imports shop.features (cell 2, line 1), which imports shop.tools (src/shop/features.py line 1): "
            "src/shop/tools.py renamed from src/shop/util.py") in features


def test_uncommitted_edits_and_new_files_count(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_notebook(repo / "notebooks/07_new.ipynb", "print('new')")
    write(repo, "notebooks/helpers.py", "SCALE = 4\n")
    chosen = selected(selection(capsys, repo))
    assert chosen[NOTEBOOKS[3]] == ["runs 'helpers.py' (cell 1, line 1): notebooks/helpers.py changed"]
    assert chosen["notebooks/07_new.ipynb"] == ["notebooks/07_new.ipynb added"]
    assert list(chosen) == [NOTEBOOKS[3], NOTEBOOKS[6], "notebooks/07_new.ipynb"]


def test_the_merge_base_not_the_tip_of_ref(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Work landed on main after the branch started is not this change's."""
    git(repo, "checkout", "-q", "main")
    write(repo, "data/sales.csv", "day,sales\n1,12\n")
    commit(repo, "main moves on")
    git(repo, "checkout", "-q", "feature")
    write(repo, "notebooks/helpers.py", "SCALE = 5\n")
    commit(repo, "helpers")
    data = selection(capsys, repo)
    assert list(selected(data)) == [NOTEBOOKS[3], NOTEBOOKS[6]]
    assert data["base"] == git(repo, "merge-base", "main", "feature").strip()


def test_text_output_lists_reasons(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(repo, "notebooks/helpers.py", "SCALE = 3\n")
    code, out, _ = orchestrator(capsys, "validate", repo, "--changed-since", "main")
    assert code == 0
    assert "2 of 7 notebooks selected" in out.splitlines()[0]
    assert "  selected      notebooks/03_report.ipynb" in out
    assert "  not selected  notebooks/05_alone.ipynb: unchanged since main\n" in out
    assert ("  not selected  notebooks/00_load.ipynb: unchanged since main; runs anyway: notebooks/03_report.ipynb "
            "comes after it") in out  # through 01 and 02


def test_an_unknown_ref_is_a_clear_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = orchestrator(capsys, "validate", repo, "--changed-since", "no-such-branch", "--json")
    assert code == 2 and out == ""
    assert "unknown ref 'no-such-branch'" in err and "Traceback" not in err


def test_outside_a_git_repository_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_notebook(tmp_path / "a.ipynb", "print(1)")
    code, _, err = orchestrator(capsys, "validate", tmp_path, "--changed-since", "main")
    assert code == 2 and "not inside a git repository" in err


def test_a_shallow_clone_without_the_merge_base_says_how_to_fetch_it(
        repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for number in range(3):
        write(repo, "notebooks/helpers.py", f"SCALE = {number + 10}\n")
        commit(repo, f"step {number}")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "feature", "--no-single-branch",
                    repo.as_uri(), str(clone)], check=True, capture_output=True)
    code, _, err = orchestrator(capsys, "validate", clone, "--changed-since", "main", "--json")
    assert code == 2 and "shallow clone" in err and "fetchDepth: 0" in err and "git fetch --deepen" in err

    # A pull request's target branch as Azure Pipelines passes it, once the history is there.
    subprocess.run(["git", "fetch", "-q", "--unshallow"], cwd=clone, check=True, capture_output=True)
    data = selection(capsys, clone, ref="refs/heads/main")
    assert list(selected(data)) == [NOTEBOOKS[3], NOTEBOOKS[6]] and data["ref"] == "refs/heads/main"


def test_a_plan_in_a_subfolder_of_the_repository(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Paths in the JSON are relative to the plan's folder; files above it are shown with ../"""
    make_notebook(repo / "project/analysis.ipynb", 'import pandas as pd\ntable = pd.read_csv("../data/prices.csv")',
                  "from shop import util")
    write(repo, "project/orchestrator.yml", "version: 1\n")  # src/ holds a package: found without pythonpath
    commit(repo, "a second plan")
    git(repo, "branch", "-f", "main")  # its base has it
    write(repo, "data/prices.csv", "item,price\na,3\n")
    make_notebook(repo / "project/new.ipynb", "print(1)")  # untracked
    code, out, err = orchestrator(capsys, "validate", repo / "project", "--changed-since", "main", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert selected(data) == {
        "analysis.ipynb": ["names '../data/prices.csv' (cell 1, line 2): ../data/prices.csv changed"],
        "new.ipynb": ["new.ipynb added"],
    }
    write(repo, "src/shop/util.py", "def clean():\n    return 3\n")
    data = selection(capsys, repo / "project")
    assert "imports shop.util (cell 2, line 1): ../src/shop/util.py changed" in selected(data)["analysis.ipynb"], data


def test_what_cannot_be_analysed_is_selected_when_anything_changed(
        repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_notebook(repo / "notebooks/08_r.ipynb", 'data <- read.csv("x.csv")', kernel="ir",
                  metadata={"orchestrator": {"skip": "no R kernel on this machine"}})
    notebook = json.loads((repo / "notebooks/08_r.ipynb").read_text(encoding="utf-8"))
    notebook["metadata"]["kernelspec"]["language"] = "R"
    (repo / "notebooks/08_r.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    make_notebook(repo / "notebooks/09_broken.ipynb", "x = (1,")
    commit(repo, "an R notebook and a cell that is not Python")
    git(repo, "branch", "-f", "main")
    assert selected(selection(capsys, repo)) == {}  # nothing changed: nothing to be unsure about
    write(repo, "data/prices.csv", "item,price\na,4\n")
    chosen = selected(selection(capsys, repo))
    assert chosen["notebooks/08_r.ipynb"] == [
        "its language is R, and only Python code is analysed, so what it uses is unknown; selected to be safe"]
    assert chosen["notebooks/09_broken.ipynb"] == [
        "cell 1, line 1 is not valid Python ('(' was never closed), so what it uses is unknown; selected to be safe"]


def test_the_trigger_falls_back_to_every_notebook_and_says_why(repo: Path) -> None:
    from orchestrator.changes import apply_selection, select_changed_or_everything
    from orchestrator.plan import load_plan

    plan = load_plan(repo)
    selection = select_changed_or_everything(plan, "refs/heads/gone", path=repo)
    assert [item.notebook for item in selection.selected] == NOTEBOOKS and selection.not_selected == ()
    assert selection.selected[0].reasons[0].startswith("every notebook runs: unknown ref 'refs/heads/gone'")
    assert all(step.skip is None for step in apply_selection(plan, selection).steps)
