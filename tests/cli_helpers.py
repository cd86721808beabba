"""Running the real `orchestrator` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def orchestrator_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(extra)
    return env


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 180, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *map(str, args)], input=stdin,
        cwd=cwd, env=env or orchestrator_env(), capture_output=True, text=True, timeout=timeout, check=False,
    )


def read_results(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    return data


def by_notebook(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["notebook"]: step for step in results["steps"]}
