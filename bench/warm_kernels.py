"""Warm kernel start (steps/_warm.py) against cold starts, side by side in one invocation.

    python bench/warm_kernels.py [--notebooks 40] [--jobs 2] [--repeat 2] [--sleep 0.5] [--work DIR]

Runs `orchestrator run WORK --jobs N` on N generated tiny notebooks, alternating warm (the default: kernels forked
from a warm parent) and `--no-warm-kernels`, best of --repeat each; then the same with notebooks that wait --sleep
seconds in a cell. Prints wall time, CPU seconds of the run and its children, per notebook, and the warm/cold
ratio.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "warm"  # git-ignored


def write_notebooks(folder: Path, count: int, sleep_s: float) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index in range(count):
        cells = ["x = 1", "print(x + 1)"] + ([f"import time\ntime.sleep({sleep_s})"] if sleep_s else [])
        nb = new_notebook(cells=[new_code_cell(source) for source in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(folder / f"nb_{index:03}.ipynb"))


def one_run(folder: Path, jobs: int, warm: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the orchestrator and every kernel it waited for)."""
    out = folder.parent / f"{folder.name}.run"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "orchestrator", "run", str(folder), "--jobs", str(jobs), "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command + ([] if warm else ["--no-warm-kernels"]), capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"orchestrator run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def compare(label: str, folder: Path, count: int, jobs: int, repeat: int) -> None:
    best: dict[bool, tuple[float, float]] = {}
    for _ in range(repeat):
        for warm in (True, False):
            wall, cpu = one_run(folder, jobs, warm)
            if warm not in best or wall < best[warm][0]:
                best[warm] = (wall, cpu)
    for warm in (True, False):
        wall, cpu = best[warm]
        print(f"{label:<28} {'warm' if warm else 'cold':<5} wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
              f"({wall / count:.3f} s, {cpu / count:.3f} CPU-s per notebook)")
    print(f"{label:<28} warm/cold wall ratio {best[True][0] / best[False][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds the waiting notebooks sleep (0: skip)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    tiny = args.work / "tiny"
    write_notebooks(tiny, args.notebooks, 0)
    compare(f"{args.notebooks} tiny, --jobs {args.jobs}", tiny, args.notebooks, args.jobs, args.repeat)
    if args.sleep:
        waiting = args.work / "waiting"
        write_notebooks(waiting, args.notebooks, args.sleep)
        compare(f"{args.notebooks} waiting {args.sleep:g} s", waiting, args.notebooks, args.jobs, args.repeat)


if __name__ == "__main__":
    main()
