"""Where a run's files live (DESIGN 5): creating run folders, their ids, and finding the pieces in one."""

from __future__ import annotations

import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.results import RESULTS_FILE

DEFAULT_RUNS_DIR = Path(".orchestrator") / "runs"
PLAN_FILE = "plan.json"
STEPS_DIR = "steps"
# What a run writes at its top level; only these are removed when a run folder is reused with --out.
RUN_OUTPUTS = (RESULTS_FILE, PLAN_FILE, "junit.xml", "report.html", "devops.json", STEPS_DIR)


def new_run_id() -> str:
    """Sortable by time, unique across concurrent runs on one machine."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def prepare_run_dir(out: Path | None, run_id: str) -> Path:
    """Create the run folder. Reusing a folder that holds an earlier run replaces that run's files;
    a non-empty folder that is not a run folder is refused rather than overwritten."""
    run_dir = out if out is not None else DEFAULT_RUNS_DIR / run_id
    if run_dir.exists():
        if not run_dir.is_dir():
            raise InvalidInputError([Problem(str(run_dir), "--out", "expected a folder, found a file")])
        entries = list(run_dir.iterdir())
        if entries and not (run_dir / RESULTS_FILE).exists():
            raise InvalidInputError(
                [Problem(str(run_dir), "--out", "the folder is not empty and holds no earlier run; refusing to overwrite it")]
            )
        for name in RUN_OUTPUTS:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    (run_dir / STEPS_DIR).mkdir(parents=True, exist_ok=True)
    return run_dir.resolve()


def step_dir(run_dir: Path, step_id: str) -> Path:
    return run_dir / STEPS_DIR / step_id
