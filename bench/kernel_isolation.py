"""What does a kernel's own PID namespace cost (docs/isolation.md)?

    python bench/kernel_isolation.py [--launches 50] [--notebooks 10] [--work DIR]

1. The confinement alone: `--launches` times, the isolated launch of a no-op (`unshare`, as root `sh` with
   `mount` and `setpriv`, the init steps/_pidinit.py, `true`) against `true` launched directly. Wall time per
   launch, and CPU seconds (user + system of the children, from getrusage) per launch.
2. End to end: `--notebooks` tiny notebooks run one after another by the step runner in this process, once with
   isolation and once without (alternating, so machine load hits both alike); wall and CPU seconds (this process
   and its children) per notebook.

The difference between the two columns is the per-kernel cost. Numbers also go to WORK/isolation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps import _isolation  # noqa: E402
from steps.run_notebook import StepRequest, run_step  # noqa: E402

DEFAULT_WORK = Path(__file__).resolve().parent / ".work"  # git-ignored


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(action: Callable[[], None], count: int) -> dict[str, float]:
    """Wall and CPU seconds per call (CPU: this process and its reaped children)."""
    walls = []
    cpu_before = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN)
    for _ in range(count):
        started = time.perf_counter()
        action()
        walls.append(time.perf_counter() - started)
    cpu_after = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN)
    return {"wall_median_s": round(statistics.median(walls), 4), "wall_mean_s": round(statistics.fmean(walls), 4),
            "cpu_s_per_call": round((cpu_after - cpu_before) / count, 4)}


def launches(isolation: _isolation.Isolation, count: int, folder: Path) -> dict[str, dict[str, float]]:
    confinement = _isolation.Confinement(isolation, folder)
    wrapped = confinement.command(["true"])

    def run(command: list[str]) -> Callable[[], None]:
        return lambda: subprocess.run(command, check=True)

    measure(run(wrapped), 3)  # warm the page cache
    return {"direct": measure(run(["true"]), count), "isolated": measure(run(wrapped), count)}


def notebooks(isolation: _isolation.Isolation, count: int, work: Path) -> dict[str, dict[str, float]]:
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("print(x + 1)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    path = work / "tiny.ipynb"
    nbformat.write(nb, str(path))
    unisolated = _isolation.Isolation(_isolation.NONE, reason="benchmark baseline")
    results: dict[str, list[tuple[float, float]]] = {"unisolated": [], "isolated": []}
    for index in range(count + 1):
        for label, chosen in (("unisolated", unisolated), ("isolated", isolation)):
            _isolation.detect = lambda chosen=chosen: chosen  # type: ignore[misc]
            cpu_before = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            result = asyncio.run(run_step(StepRequest(notebook_path=path, output_dir=work / f"out-{label}")))
            wall = time.perf_counter() - started
            cpu = cpu_s(resource.RUSAGE_SELF) + cpu_s(resource.RUSAGE_CHILDREN) - cpu_before
            if result.status != "passed":
                raise SystemExit(f"{label} run did not pass: {result.error}")
            if index:  # the first round warms imports and caches
                results[label].append((wall, cpu))
    return {label: {"wall_median_s": round(statistics.median(w for w, _ in rows), 4),
                    "cpu_s_median": round(statistics.median(c for _, c in rows), 4)}
            for label, rows in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launches", type=int, default=50)
    parser.add_argument("--notebooks", type=int, default=10)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    isolation = _isolation.detect()
    if not isolation.confined:
        print(f"no isolation on this machine: {isolation.reason}", file=sys.stderr)
        return 1
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nbk-bench-") as folder:
        report = {"mode": "root" if "setpriv" in " ".join(isolation.wrapper) else "user namespace",
                  "launch": launches(isolation, args.launches, Path(folder)),
                  "notebook": notebooks(isolation, args.notebooks, args.work)}
    for part in ("launch", "notebook"):
        rows = report[part]
        base, isolated = list(rows.values())
        for key in base:
            print(f"{part:9} {key:15} {list(rows)[0]}={base[key]:.4f}  isolated={isolated[key]:.4f}  "
                  f"cost={isolated[key] - base[key]:+.4f}")
    (args.work / "isolation.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
