"""How long do hostile or oversized inputs take to be refused, and what does `validate` pay per notebook?

    python bench/hostile_inputs.py [--notebooks 200] [--work DIR]

Each case writes a repository and times `orchestrator validate` in a fresh interpreter (time.perf_counter
around the subprocess; three runs, minimum and maximum), and prints the exit code and the first line of the
message. Cases:

1. YAML alias bombs of 6, 7 and 9 levels under `defaults.parameters` (296 bytes to 1 KB; before the limits,
   6 levels took 7.5 minutes and wrote a 19 MB plan.json, 9 levels kept validate busy past a minute);
2. YAML nested 600 levels deep; an integer of 5,000 digits;
3. a plan file just under the 256 KiB cap (entries naming notebooks that do not exist: every one a problem),
   and one of 12.8 MB (refused by size before it is parsed; it took 286 s and 1.65 GB before);
4. `validate` of N small notebooks, which runs the step runner's pre-kernel checks on each (the cost of
   "validate reports every problem run would"), against `orchestrator schema` (interpreter and plan models
   loaded, nothing read) as the floor.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "hostile"  # git-ignored
RUNS = 3


def _bomb(levels: int) -> str:
    lines = ["defaults:", "  parameters:", "    l0: &l0 [a, a, a, a, a, a, a, a, a]"]
    for level in range(1, levels + 1):
        lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _notebook(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=[new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def _case(work: Path, name: str, plan: str | None, notebooks: int = 1) -> Path:
    root = work / name
    shutil.rmtree(root, ignore_errors=True)
    for index in range(notebooks):
        _notebook(root / f"nb{index:04d}.ipynb")
    if plan is not None:
        (root / "orchestrator.yml").write_text(plan, encoding="utf-8")
    return root


def _time(*args: str | Path) -> tuple[float, float, int, str]:
    times = []
    done = None
    for _ in range(RUNS):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True,
                              text=True, timeout=600, check=False)
        times.append(time.perf_counter() - started)
    assert done is not None
    first = (done.stderr or done.stdout).strip().splitlines()[:2]
    return min(times), max(times), done.returncode, " | ".join(first)[:150]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=200)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)

    entries = "notebooks:\n" + "".join(f"  - path: missing/n{index:06d}.ipynb\n" for index in range(40_000))
    entries = entries[: (256 << 10) - 100]
    entries = entries[: entries.rindex("\n") + 1]
    big = "notebooks:\n" + "".join(f"  - path: n{index:07d}.ipynb\n    retries: 1\n" for index in range(330_000))
    cases = {
        "bomb6": _bomb(6), "bomb7": _bomb(7), "bomb9": _bomb(9),
        "nested600": "defaults:\n  parameters:\n    x: " + "[" * 600 + "]" * 600 + "\n",
        "int5000": "defaults:\n  parameters:\n    x: " + "7" * 5000 + "\n",
        "plan_256kib": entries,
        "plan_12_8mb": big,
    }
    print(f"{'case':<16} {'plan bytes':>11} {'min s':>7} {'max s':>7} {'exit':>4}  message")
    for name, plan in cases.items():
        root = _case(work, name, plan)
        low, high, code, message = _time("validate", root)
        print(f"{name:<16} {len(plan.encode()):>11} {low:>7.2f} {high:>7.2f} {code:>4}  {message}")

    root = _case(work, "notebooks", None, args.notebooks)
    floor_low, floor_high, _, _ = _time("schema")
    low, high, code, _ = _time("validate", root)
    print(f"\ninterpreter floor (orchestrator schema): {floor_low:.2f}-{floor_high:.2f} s")
    print(f"validate {args.notebooks} notebooks: {low:.2f}-{high:.2f} s (exit {code}); "
          f"about {1000 * (low - floor_low) / args.notebooks:.1f} ms per notebook above the floor")


if __name__ == "__main__":
    main()
