"""The examples plan three ways, each timed as a whole subprocess (time.perf_counter):

    python bench/emulate_examples.py [--work DIR] [--repeat N]

1. `orchestrator run examples`: the local backend;
2. `orchestrator compile examples --out WORK/pipeline.yml`: the Azure ML job, offline, validated;
3. `orchestrator emulate WORK/pipeline.yml`: that job run in the emulated workspace (fresh each time, so
   nothing is reused).

The emulated run pays what a node pays on Azure ML besides compute start: a copy of the code snapshot per
node, the step runner and mlflow started once per node, the report node's MLflow search and downloads.
Numbers go to WORK/emulate.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = Path(__file__).resolve().parent / ".work" / "emulate"  # git-ignored


def timed(*args: str | Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"orchestrator {args[0]} exited {done.returncode}")
    return elapsed, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for attempt in range(args.repeat):
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
        local, local_rc = timed("run", "examples", "--out", args.work / "local")
        compiled, _ = timed("compile", "examples", "--out", args.work / "pipeline.yml")
        emulated, emulated_rc = timed("emulate", args.work / "pipeline.yml", "--out", args.work / "emulated",
                                      "--emulator-dir", args.work / "workspace")
        rows.append({"local_s": round(local, 1), "compile_s": round(compiled, 1), "emulate_s": round(emulated, 1),
                     "compile_plus_emulate_s": round(compiled + emulated, 1), "exit_codes": [local_rc, emulated_rc]})
        print(f"run {attempt + 1}: local {local:.1f}s; compile {compiled:.1f}s + emulate {emulated:.1f}s = "
              f"{compiled + emulated:.1f}s ({(compiled + emulated) / local:.1f}x)", flush=True)
    (args.work / "emulate.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
