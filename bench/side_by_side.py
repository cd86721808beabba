"""The orchestrator against the tools a user would otherwise type, side by side in one invocation (issue 13, item 1).

    python bench/side_by_side.py [--notebooks 40] [--jobs 2] [--repeat 2] [--work DIR] [--skip compile,pandas]

Each comparison runs both commands as whole subprocesses, alternating, best of --repeat by wall time, and
records for each run its wall time (time.perf_counter), the CPU seconds of the command and every process it
waited for (getrusage of children: the kernels included) and its peak memory, sampled every 50 ms with psutil: the
summed proportional set size (PSS) of the process tree, where a page shared by N processes counts 1/N in each
(kernels forked from one warm parent share its pages copy-on-write; the summed resident size, also printed, counts
each shared page once per process and so overstates forked kernels):

1. N tiny notebooks: `orchestrator run --jobs J` vs `pytest --nbmake -n J` (target: ratio <= 0.25, and at
   most 0.25 CPU-s per notebook for the orchestrator);
2. one tiny notebook: `orchestrator run` vs the papermill CLI `papermill in.ipynb out.ipynb` (target <= 0.8);
3. N notebooks that import numpy and pandas, as in (1): the common case (reported, no target);
4. `orchestrator compile` of a 300-notebook plan, end to end (bench/compile_scale.py; target <= 5 s).

Ratios are orchestrator / other tool; the numbers also go to WORK/side_by_side.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
import psutil
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compile_scale  # noqa: E402
from local_overhead import orchestrator_command  # noqa: E402

DEFAULT_WORK = compile_scale.DEFAULT_WORK.parent / "side_by_side"  # outside the repository, as compile_scale's
TINY = ["size = 1000", "total = sum(range(size))\ntotal", "assert total == size * (size - 1) // 2\nprint('ok')"]
PANDAS = ["import numpy as np\nimport pandas as pd", "frame = pd.DataFrame({'x': np.arange(1000)})\nframe.x.sum()"]
TARGET_LOCAL = 0.25  # orchestrator / nbmake, N tiny notebooks
TARGET_CPU_PER_NOTEBOOK = 0.25
TARGET_SINGLE = 0.8  # orchestrator / papermill CLI, one notebook
SKIPPABLE = ("pandas", "compile")


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    peak_mib: float  # PSS
    peak_rss_mib: float
    ok: bool


@dataclass
class Comparison:
    name: str
    notebooks: int
    orchestrator: Run
    other_tool: str
    other: Run
    target: float | None

    @property
    def ratio(self) -> float:
        return self.orchestrator.wall_s / self.other.wall_s


def write_notebooks(folder: Path, count: int, cells: list[str]) -> list[Path]:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    # An empty pytest config of its own, so nbmake's run does not pick up the repository's pytest settings.
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    paths = []
    for index in range(count):
        notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = folder / f"nb_{index:03d}.ipynb"
        nbformat.write(notebook, str(path))
        paths.append(path)
    return paths


def _tree_memory(process: psutil.Process) -> tuple[int, int]:
    """(summed PSS, summed RSS) of the process and its descendants."""
    pss = rss = 0
    for each in [process, *process.children(recursive=True)]:
        try:
            memory = each.memory_full_info()
        except psutil.Error:
            continue  # it ended between listing and reading
        pss += getattr(memory, "pss", memory.rss)  # PSS exists on Linux only
        rss += memory.rss
    return pss, rss


def run(command: list[str], cwd: Path) -> Run:
    """One whole subprocess: wall, CPU of it and its waited-for descendants, peak summed RSS of its tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = peak_rss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_rss
        try:
            watched = psutil.Process(child.pid)
            while not stop.is_set():
                pss, rss = _tree_memory(watched)
                peak, peak_rss = max(peak, pss), max(peak_rss, rss)
                stop.wait(0.05)
        except psutil.Error:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if child.returncode != 0:
        print(f"  exit code {child.returncode}: {' '.join(command)}\n" + "\n".join(output.splitlines()[-20:]))
    return Run(wall, cpu, peak / 2**20, peak_rss / 2**20, child.returncode == 0)


def best_of(repeat: int, commands: dict[str, tuple[list[str], Path]]) -> dict[str, Run]:
    """Each command `repeat` times, alternating; the fastest successful run of each."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for attempt in range(repeat):
        for name, (command, cwd) in commands.items():
            result = run(command, cwd)
            print(f"  {name:<13} try {attempt + 1}: {result.wall_s:6.2f}s wall {result.cpu_s:6.2f} CPU-s "
                  f"{result.peak_mib:7.0f} MiB peak PSS ({result.peak_rss_mib:.0f} RSS)"
                  f"{'' if result.ok else '  FAILED'}", flush=True)
            runs[name].append(result)
    return {name: min(each, key=lambda r: (not r.ok, r.wall_s)) for name, each in runs.items()}


def orchestrator_run(folder: Path, jobs: int) -> list[str]:
    out = folder.parent / f"{folder.name}.run"
    return [*orchestrator_command(), "run", str(folder), "--jobs", str(jobs), "--out", str(out)]


def nbmake(folder: Path, jobs: int) -> list[str]:
    return [sys.executable, "-m", "pytest", "--nbmake", "-n", str(jobs), "-q", "-p", "no:cacheprovider",
            "-c", str(folder / "pytest.ini"), "--rootdir", str(folder), str(folder)]


def papermill_cli(notebook: Path) -> list[str]:
    script = Path(sys.executable).parent / "papermill"
    # Written beside the folder, not in it: the orchestrator's next run of the folder would run it as a notebook.
    out = notebook.parent.parent / f"{notebook.parent.name}.papermill.ipynb"
    return [str(script) if script.exists() else "papermill", str(notebook), str(out)]


def many(name: str, work: Path, count: int, jobs: int, repeat: int, cells: list[str], target: float | None) -> Comparison:
    folder = work / name
    write_notebooks(folder, count, cells)
    print(f"\n{name}: {count} notebooks, --jobs {jobs} / -n {jobs}")
    best = best_of(repeat, {"orchestrator": (orchestrator_run(folder, jobs), work),
                            "nbmake": (nbmake(folder, jobs), folder)})
    return Comparison(name, count, best["orchestrator"], "pytest --nbmake", best["nbmake"], target)


def single(work: Path, repeat: int) -> Comparison:
    folder = work / "single"
    notebook = write_notebooks(folder, 1, TINY)[0]
    print("\nsingle: one tiny notebook")
    best = best_of(repeat, {"orchestrator": (orchestrator_run(folder, 1), work),
                            "papermill": (papermill_cli(notebook), folder)})
    return Comparison("single", 1, best["orchestrator"], "papermill CLI", best["papermill"], TARGET_SINGLE)


def _verdict(value: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"(target <= {target:.2f}: {'met' if value <= target else 'MISSED'})"


def report(comparisons: list[Comparison], compile_s: float | None) -> None:
    print(f"\n{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; best of the runs, by wall time")
    print(f"{'comparison':<12}{'tool':<17}{'wall s':>8}{'CPU-s':>8}{'CPU-s/nb':>10}{'peak PSS MiB':>14}"
          f"{'(RSS)':>8}")
    for c in comparisons:
        for tool, result in (("orchestrator", c.orchestrator), (c.other_tool, c.other)):
            print(f"{c.name:<12}{tool:<17}{result.wall_s:8.2f}{result.cpu_s:8.2f}"
                  f"{result.cpu_s / c.notebooks:10.3f}{result.peak_mib:14.0f}{result.peak_rss_mib:8.0f}")
    print()
    for c in comparisons:
        print(f"{c.name}: orchestrator / {c.other_tool} = {c.ratio:.2f} {_verdict(c.ratio, c.target)}")
    tiny = next((c for c in comparisons if c.name == "tiny"), None)
    if tiny is not None:
        per = tiny.orchestrator.cpu_s / tiny.notebooks
        print(f"tiny: orchestrator CPU-s per notebook = {per:.3f} {_verdict(per, TARGET_CPU_PER_NOTEBOOK)}")
    if compile_s is not None:
        print(f"compile: 300 notebooks in {compile_s:.2f}s {_verdict(compile_s, compile_scale.TARGET_S)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebooks", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--skip", default="", help=f"comma-separated, of: {', '.join(SKIPPABLE)}")
    args = parser.parse_args(argv)
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if skip - set(SKIPPABLE):
        parser.error(f"--skip: choose from {', '.join(SKIPPABLE)}")
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    comparisons = [many("tiny", work, args.notebooks, args.jobs, args.repeat, TINY, TARGET_LOCAL),
                   single(work, args.repeat)]
    if "pandas" not in skip:
        comparisons.append(many("pandas", work, args.notebooks, args.jobs, args.repeat, PANDAS, None))
    compile_s = None if "compile" in skip else compile_scale.measure(work / "compile", 300, args.repeat)
    report(comparisons, compile_s)
    summary = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "compile_300_s": compile_s,
               "comparisons": [{**asdict(c), "ratio": c.ratio} for c in comparisons]}
    (work / "side_by_side.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"numbers written to {work / 'side_by_side.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
