"""How much memory does the orchestrator need for a notebook that prints a lot?

    python bench/output_memory.py [--megabytes 200] [--limit 2000000] [--work DIR]

Generates one notebook whose single cell prints about MEGABYTES of text in 100-character lines, runs
`orchestrator run WORK --jobs 1 --out WORK/.run`, and samples the peak resident memory (VmHWM in
/proc/PID/status, Linux) of the orchestrator process every 20 ms until it exits. Outputs over the per-cell
limit are dropped as they arrive, so the peak should not grow with MEGABYTES. Prints one JSON line.
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

DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "output_memory"  # git-ignored


def peak_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    lines = args.megabytes * 10_000  # 100 bytes a line
    nb = new_notebook(cells=[new_code_cell(f"for i in range({lines}):\n    print(f'{{i:09d}}' + 'x' * 90)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(args.work / "prints.ipynb"))
    orchestrator = Path(sys.executable).with_name("orchestrator")
    command = [str(orchestrator), "run", str(args.work), "--jobs", "1", "--out", str(args.work / ".run")]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while process.poll() is None:
        peak = max(peak, peak_kib(process.pid) or 0)
        time.sleep(0.02)
    wall = time.perf_counter() - started
    size = (args.work / ".run" / "steps" / "prints" / "prints.ipynb").stat().st_size
    print(json.dumps({"printed_mb": args.megabytes, "exit_code": process.returncode, "peak_rss_mb": round(peak / 1024, 1),
                      "wall_s": round(wall, 1), "executed_notebook_bytes": size, "command": command}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
