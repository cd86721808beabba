"""The static analysis of notebook code (orchestrator/changes/code.py, notebook.py): what a cell depends on,
IPython syntax included, without running or importing anything."""

from __future__ import annotations

from pathlib import Path

from orchestrator.changes.code import analyse
from orchestrator.changes.notebook import notebook_facts
from tests.builders import make_notebook


def _found(tmp_path: Path, *cells: str) -> tuple[set[str], set[str], set[str]]:
    facts, problem = notebook_facts(make_notebook(tmp_path / "nb.ipynb", *cells))
    assert problem is None
    imports = {("." * item.level) + item.module + (f":{','.join(item.names)}" if item.names else "")
               for item in facts.imports}
    return imports, {ref.pattern for ref in facts.paths}, {item.prefix or "?" for item in facts.dynamic}


def test_imports_in_every_form_ipython_syntax_included(tmp_path: Path) -> None:
    imports, _, dynamic = _found(
        tmp_path,
        "import a.b, c as d\nfrom e.f import g, h\nimport importlib\nm = importlib.import_module('i.j')",
        "%run -m k.l\n%load_ext m.n\n!python -m o.p --flag",
        "%%capture captured\nimport q.r",
        "%%bash\npython -m never.python  # a shell cell: only python -m counts\nls",
        "importlib.import_module(f'plugins.{name}')\n__import__(other)",
    )
    assert {"a.b", "c", "e.f:g,h", "i.j", "k.l", "m.n", "o.p", "q.r", "never.python", "importlib"} <= imports
    assert dynamic == {"plugins", "?"}


def test_paths_as_written_or_as_patterns_when_computed(tmp_path: Path) -> None:
    _, paths, _ = _found(
        tmp_path,
        "DATA = 'data'\nsplit = input()",
        "from pathlib import Path\nimport os\n"
        "a = Path(DATA) / 'train.csv'\nb = os.path.join(DATA, 'test.csv')\nc = f'{DATA}/{split}.parquet'\n"
        "d = open('conf/' + 'model.yml')\ne = '{}/x.json'.format(split)\nrow = {'data': 1}\nrow['models']",
        "%run helpers.py\n!cat data/raw.txt | head\n%load snippets/load.py",
    )
    assert {"data/train.csv", "data/test.csv", "data/*.parquet", "conf/model.yml", "*/x.json", "helpers.py",
            "data/raw.txt", "snippets/load.py"} <= paths
    # DATA is only ever a part of those paths: the folder itself is not named; keys and columns are not paths.
    assert "data" not in paths and "models" not in paths


def test_a_name_bound_to_a_path_counts_where_it_is_used(tmp_path: Path) -> None:
    _, paths, _ = _found(tmp_path, "import os\nDATA = 'data'\nUNUSED = 'other/file.csv'", "files = os.listdir(DATA)")
    assert "data" in paths and "other/file.csv" not in paths


def test_a_module_finds_files_next_to_itself() -> None:
    facts = analyse("from pathlib import Path\nHERE = Path(__file__).parent / 'schema.json'\n", "", file_name="m.py")
    assert "./schema.json" in {ref.pattern for ref in facts.paths}


def test_sys_path_additions_are_marked(tmp_path: Path) -> None:
    facts, _ = notebook_facts(make_notebook(tmp_path / "nb.ipynb", "import sys\nsys.path.insert(0, '../src')"))
    assert [ref.pattern for ref in facts.paths if ref.sys_path] == ["../src"]


def test_what_is_not_python_is_reported_not_raised(tmp_path: Path) -> None:
    facts, problem = notebook_facts(make_notebook(tmp_path / "nb.ipynb", "def broken(:\n    pass"))
    assert problem is None and facts.unreadable == ["cell 1, line 1 is not valid Python (invalid syntax)"]
    (tmp_path / "bad.ipynb").write_text("{not json", encoding="utf-8")
    assert notebook_facts(tmp_path / "bad.ipynb")[1] == "it cannot be read (JSONDecodeError)"
