"""How long does `--changed-since` take to decide, on a repository of realistic size?

    python bench/changes_selection.py [--notebooks 60] [--modules 80] [--data 2000] [--work DIR]

Generates a git repository: a package of M modules importing each other in a chain of layers, N notebooks
(each importing two modules and reading two data files, chained in pairs with `after`), D data files, and an
orchestrator.yml; commits it on main, then changes one module on a branch. Times, with time.perf_counter:

1. `orchestrator validate WORK` (the plan alone: the floor every command pays);
2. `orchestrator validate WORK --changed-since main --json` (plan + selection), and checks the selection is
   the notebooks importing that module (and what comes after them).

Each command runs three times in a fresh interpreter; the minimum and maximum are printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "changes"  # git-ignored
RUNS = 3


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=b@example.com", "-c", "user.name=bench", *args], cwd=repo, check=True,
                   capture_output=True)


def build(work: Path, notebooks: int, modules: int, data: int) -> None:
    if work.exists():
        shutil.rmtree(work)
    (work / "src" / "shop").mkdir(parents=True)
    (work / "src" / "shop" / "__init__.py").write_text("")
    for index in range(modules):
        below = f"from shop import m{index - 1}\n" if index else ""
        (work / "src" / "shop" / f"m{index}.py").write_text(f"{below}VALUE = {index}\n")
    (work / "data").mkdir()
    for index in range(data):
        (work / "data" / f"d{index}.csv").write_text(f"a,b\n{index},1\n")
    entries = []
    for index in range(notebooks):
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [
            new_code_cell("import sys\nsys.path.append('../src')"),
            new_code_cell(f"from shop import m{index % modules}, m{(index * 7) % modules}\n%matplotlib inline"),
            new_code_cell(f"import pandas as pd\na = pd.read_csv('../data/d{index % data}.csv')\n"
                          f"b = open('../data/d{(index * 3) % data}.csv').read()\n!ls ../data | head -1"),
        ]
        (work / "notebooks").mkdir(exist_ok=True)
        nbformat.write(nb, str(work / "notebooks" / f"nb{index:03d}.ipynb"))
        if index % 2:
            entries.append(f"  - path: notebooks/nb{index:03d}.ipynb\n    after: [notebooks/nb{index - 1:03d}.ipynb]\n")
    (work / "orchestrator.yml").write_text("version: 1\nnotebooks:\n  - glob: 'notebooks/*.ipynb'\n" + "".join(entries))
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    git(work, "checkout", "-q", "-b", "change")
    # The last module is imported by few notebooks and imports the whole chain below it: a deep walk.
    (work / "src" / "shop" / f"m{modules - 1}.py").write_text(f"from shop import m{modules - 2}\nVALUE = -1\n")
    git(work, "commit", "-q", "-am", "change one module")


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notebooks", type=int, default=60)
    parser.add_argument("--modules", type=int, default=80)
    parser.add_argument("--data", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    build(args.work, args.notebooks, args.modules, args.data)
    base = [sys.executable, "-m", "orchestrator", "validate", str(args.work)]
    plain = [timed(base)[0] for _ in range(RUNS)]
    results = [timed([*base, "--changed-since", "main", "--json"]) for _ in range(RUNS)]
    selection = json.loads(results[0][1])
    changed = args.modules - 1
    importing = {f"notebooks/nb{i:03d}.ipynb" for i in range(args.notebooks)
                 if changed in (i % args.modules, (i * 7) % args.modules)}
    chosen = {item["notebook"] for item in selection["selected"]}
    assert importing <= chosen, (importing, chosen)
    print(f"repository: {args.notebooks} notebooks, {args.modules} modules, {args.data} data files")
    print(f"validate:                        {min(plain):.2f}-{max(plain):.2f} s")
    times = [elapsed for elapsed, _ in results]
    print(f"validate --changed-since --json: {min(times):.2f}-{max(times):.2f} s "
          f"({len(chosen)} of {args.notebooks} selected)")


if __name__ == "__main__":
    main()
