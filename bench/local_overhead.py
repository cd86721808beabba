"""How much does the local backend cost on top of executing the notebooks?

    python bench/local_overhead.py [--notebooks 40] [--jobs N] [--work DIR] [--skip nbmake,papermill] [--check]

Generates N tiny notebooks (a `parameters` cell and two trivial code cells) and runs the same set, one tool
after another, timing each whole subprocess with time.perf_counter:

1. `orchestrator run WORK --jobs N --out WORK/.run`: the local backend, N notebooks at a time;
2. `python -m pytest --nbmake -n N`: nbmake under pytest-xdist, the usual way to run notebooks in CI;
3. a sequential papermill loop in one process (kernel start-up plus execution, no parallelism).

With tiny notebooks the run time is almost all kernel start-up and bookkeeping, which is the overhead this
measures. The target is orchestrator / nbmake <= 0.60 on the same machine. The numbers also go to
WORK/bench.json; `--check` exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

TOOLS = ("orchestrator", "nbmake", "papermill")
TARGET_RATIO = 0.60
DEFAULT_WORK = Path(__file__).resolve().parent / ".work"  # git-ignored
NOTEBOOK_PREFIX = "bench_"

# One import of papermill for the whole loop, so the sequential baseline pays kernel start-up per notebook
# and nothing else.
PAPERMILL_LOOP = """
import sys
from pathlib import Path

import papermill

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
for notebook in sys.argv[2:]:
    papermill.execute_notebook(notebook, str(out / Path(notebook).name), kernel_name="python3", progress_bar=False)
"""


@dataclass
class Measurement:
    tool: str
    status: str  # ok | failed | skipped
    wall_s: float | None = None
    per_notebook_s: float | None = None
    ratio_vs_orchestrator: float | None = None
    command: list[str] | None = None
    returncode: int | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=int, default=40, help="how many notebooks to generate (default 40)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="notebooks at a time, for orchestrator and nbmake"
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK})")
    parser.add_argument("--skip", default="", help=f"comma-separated tools not to run, of: {', '.join(TOOLS)}")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each tool may run (default 900)")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 unless orchestrator / nbmake <= {TARGET_RATIO:.2f}"
    )
    args = parser.parse_args(argv)
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if unknown := args.skip - set(TOOLS):
        parser.error(f"--skip: unknown tool(s) {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}")
    if args.notebooks < 1 or args.jobs < 1:
        parser.error("--notebooks and --jobs must be at least 1")
    if args.check and args.skip & {"orchestrator", "nbmake"}:
        parser.error("--check compares orchestrator with nbmake: skip neither")
    return args


def generate(work: Path, count: int) -> list[Path]:
    """Write `count` tiny notebooks into `work`, replacing those of an earlier run (and only those)."""
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob(f"{NOTEBOOK_PREFIX}*.ipynb"):
        old.unlink()
    for folder in (".run", ".papermill", ".warmup"):
        shutil.rmtree(work / folder, ignore_errors=True)
    # An empty pytest config of its own, so nbmake's run does not pick up the repository's pytest settings.
    (work / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    paths = []
    for index in range(count):
        notebook = new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        notebook.cells = [
            new_markdown_cell(f"# Benchmark notebook {index}"),
            new_code_cell(f"size = {1000 + index}", metadata={"tags": ["parameters"]}),
            new_code_cell("total = sum(range(size))\ntotal"),
            new_code_cell("assert total == size * (size - 1) // 2\nprint('ok', size)"),
        ]
        path = work / f"{NOTEBOOK_PREFIX}{index:03d}.ipynb"
        nbformat.write(notebook, str(path))
        paths.append(path)
    return paths


def orchestrator_command() -> list[str]:
    """The console script installed next to this interpreter (the project's own), else the one on PATH."""
    bin_dir = Path(sys.executable).parent
    for name in ("orchestrator", "orchestrator.exe"):
        if (bin_dir / name).exists():
            return [str(bin_dir / name)]
    found = shutil.which("orchestrator")
    return [found] if found else [str(bin_dir / "orchestrator")]


def commands(work: Path, notebooks: list[Path], jobs: int) -> dict[str, list[str]]:
    return {
        "orchestrator": [*orchestrator_command(), "run", str(work), "--jobs", str(jobs), "--out", str(work / ".run")],
        "nbmake": [
            sys.executable, "-m", "pytest", "--nbmake", "-n", str(jobs), "-q", "-p", "no:cacheprovider",
            "-c", str(work / "pytest.ini"), "--rootdir", str(work), str(work),
        ],
        "papermill": [sys.executable, "-c", PAPERMILL_LOOP, str(work / ".papermill"), *map(str, notebooks)],
    }


def warm_up(work: Path, notebook: Path) -> None:
    """Execute one notebook, untimed, so the first tool measured does not pay for cold disk caches alone."""
    subprocess.run(
        [sys.executable, "-c", PAPERMILL_LOOP, str(work / ".warmup"), str(notebook)],
        capture_output=True,
        text=True,
        check=False,
    )


def measure(tool: str, command: list[str], count: int, timeout: float) -> Measurement:
    print(f"running {tool} ...", flush=True)
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as error:
        print(f"{tool}: cannot start: {error}")
        return Measurement(tool, "failed", command=command)
    except subprocess.TimeoutExpired:
        print(f"{tool}: still running after {timeout:.0f}s, stopped")
        return Measurement(tool, "failed", command=command)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        print(f"{tool}: exit code {completed.returncode}; its output:")
        print(_tail(completed.stdout + completed.stderr))
        return Measurement(tool, "failed", wall, command=command, returncode=completed.returncode)
    return Measurement(tool, "ok", wall, wall / count, command=command, returncode=0)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _fmt(value: float | None, width: int, precision: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{precision}f}"


def report(results: list[Measurement], count: int, jobs: int) -> float | None:
    """Print the table and the headline; return orchestrator / nbmake (None when either did not run)."""
    by_tool = {m.tool: m for m in results}
    orchestrator = by_tool["orchestrator"]
    for m in results:
        if m.status == "ok" and orchestrator.status == "ok" and orchestrator.wall_s:
            m.ratio_vs_orchestrator = m.wall_s / orchestrator.wall_s if m.wall_s is not None else None

    print(f"\n{count} notebooks, {jobs} jobs, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'tool':<14}{'wall s':>9}{'s/notebook':>12}{'vs orchestrator':>17}  status")
    for m in results:
        print(
            f"{m.tool:<14}{_fmt(m.wall_s, 9, 2)}{_fmt(m.per_notebook_s, 12, 3)}"
            f"{_fmt(m.ratio_vs_orchestrator, 17, 2)}  {m.status}"
        )
    nbmake = by_tool["nbmake"]
    ratio = None
    if orchestrator.status == "ok" and nbmake.status == "ok" and orchestrator.wall_s and nbmake.wall_s:
        ratio = orchestrator.wall_s / nbmake.wall_s
    shown = "n/a" if ratio is None else f"{ratio:.2f}"
    print(f"\norchestrator / nbmake = {shown} (target <= {TARGET_RATIO:.2f})")
    return ratio


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work: Path = args.work.resolve()
    notebooks = generate(work, args.notebooks)
    warm_up(work, notebooks[0])
    planned = commands(work, notebooks, args.jobs)
    results = [
        Measurement(tool, "skipped") if tool in args.skip else measure(tool, planned[tool], len(notebooks), args.timeout)
        for tool in TOOLS
    ]
    ratio = report(results, len(notebooks), args.jobs)
    met = None if ratio is None else ratio <= TARGET_RATIO
    summary = {
        "schema": 1,
        "notebooks": len(notebooks),
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "results": {m.tool: asdict(m) for m in results},
        "orchestrator_over_nbmake": ratio,
        "target": TARGET_RATIO,
        "met": met,
    }
    (work / "bench.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"numbers written to {work / 'bench.json'}")
    if args.check and not met:
        print("check failed: " + ("target missed" if ratio is not None else "no ratio: a tool failed"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
