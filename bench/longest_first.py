"""Does starting the longest chain first bring a local run close to its lower bound?

    python bench/longest_first.py [--slots 3] [--scale 1.0] [--work DIR] [--check]

Generates a synthetic plan of notebooks that sleep for mixed durations, listed the way a repository often
is: many short notebooks first, the long ones and a chain of dependent notebooks last. Runs it twice with
`orchestrator run --jobs SLOTS`, each against the same fresh history file:

1. plan order: the history is empty, so ready notebooks start in the order the plan lists them;
2. longest first: the history now holds run 1's durations, so the longest remaining chain starts first.

For each run, makespan = the last notebook's end - the first notebook's start (from results.json), and the
lower bound = max(longest chain of `after`, total work / slots), where work is what each notebook sleeps:
the bound of a scheduler with no overhead at all. Each notebook also costs a kernel start and stop, which
no order removes; the bound computed from the measured step durations (kernel start and stop included,
though a slot is freed before the kernel has stopped) is printed beside it. The target: longest first
within 10% of the lower bound. Numbers go to WORK/bench.json; `--check` exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "longest_first"  # git-ignored
TARGET = 1.10
# name -> (seconds of sleep, notebooks it runs after); plan order is this order.
PLAN: dict[str, tuple[float, tuple[str, ...]]] = {
    **{f"a{n:02d}_short": (2.0, ()) for n in range(1, 9)},
    "b1_chain": (3.0, ()),
    "b2_chain": (3.0, ("b1_chain",)),
    "b3_chain": (3.0, ("b2_chain",)),
    "c1_long": (14.0, ()),
    "c2_long": (10.0, ()),
}


@dataclass
class Measurement:
    mode: str
    makespan_s: float
    lower_bound_s: float  # from the sleeps
    ratio: float
    measured_bound_s: float  # from the measured step durations
    first_started: list[str]


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def write_plan(repo: Path, scale: float) -> None:
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    entries = []
    for name, (seconds, after) in PLAN.items():
        notebook = new_notebook(cells=[new_code_cell(f"import time\ntime.sleep({seconds * scale:.2f})")])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
        nbformat.write(notebook, str(repo / f"{name}.ipynb"))
        entry = f"  - path: {name}.ipynb"
        if after:
            entry += "\n    after: [" + ", ".join(f"{dep}.ipynb" for dep in after) + "]"
        entries.append(entry)
    (repo / "orchestrator.yml").write_text("version: 1\nnotebooks:\n" + "\n".join(entries) + "\n", encoding="utf-8")


def lower_bound(work: dict[str, float], slots: int) -> float:
    chain: dict[str, float] = {}
    for name, (_seconds, after) in PLAN.items():  # PLAN lists every notebook after its `after`
        chain[name] = work[name] + max((chain[dep] for dep in after), default=0.0)
    return max(max(chain.values()), sum(work.values()) / slots)


def measure(mode: str, results: dict[str, object], slots: int, scale: float) -> Measurement:
    steps = [s for s in results["steps"] if isinstance(s, dict)]  # type: ignore[attr-defined]
    bound = lower_bound({name: seconds * scale for name, (seconds, _after) in PLAN.items()}, slots)
    measured = lower_bound({s["notebook"].removesuffix(".ipynb"): float(s["duration_s"]) for s in steps}, slots)
    makespan = max(_stamp(s["finished_at"]) for s in steps) - min(_stamp(s["started_at"]) for s in steps)
    order = [s["notebook"].removesuffix(".ipynb") for s in sorted(steps, key=lambda s: s["started_at"])]
    return Measurement(mode, round(makespan, 2), round(bound, 2), round(makespan / bound, 3), round(measured, 2),
                       order[:slots])


def run(repo: Path, out: Path, slots: int, history: Path) -> dict[str, object]:
    env = {**os.environ, "ORCHESTRATOR_HISTORY": str(history)}
    command = [sys.executable, "-m", "orchestrator", "run", str(repo), "--jobs", str(slots), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    data: dict[str, object] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=3, help="--jobs for both runs")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every sleep (smaller: faster, noisier)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--check", action="store_true", help=f"exit 1 unless longest first <= {TARGET} x bound")
    args = parser.parse_args(argv)

    repo, history = args.work / "repo", args.work / "history.sqlite"
    write_plan(repo, args.scale)
    history.unlink(missing_ok=True)
    for previous in ("run-plan-order", "run-longest-first"):
        shutil.rmtree(args.work / previous, ignore_errors=True)
    results = [
        measure("plan order", run(repo, args.work / "run-plan-order", args.slots, history), args.slots, args.scale),
        measure("longest first", run(repo, args.work / "run-longest-first", args.slots, history), args.slots,
                args.scale),
    ]
    for m in results:
        print(f"{m.mode:>13}: makespan {m.makespan_s:6.2f}s  lower bound {m.lower_bound_s:6.2f}s  "
              f"ratio {m.ratio:.3f}  (bound from measured step times {m.measured_bound_s:.2f}s)"
              f"  first: {', '.join(m.first_started)}")
    (args.work / "bench.json").write_text(json.dumps([asdict(m) for m in results], indent=2) + "\n", encoding="utf-8")
    return 1 if args.check and results[1].ratio > TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
