"""Run history: every finished run's per-notebook status, duration and metrics, kept across runs.

- `store`: the SQLite file and its queries;
- `record`: a run folder -> a history entry (at the end of `orchestrator run`, and `history import`);
- `estimates`: expected durations (scheduling, packing, the live view's time left);
- `command`: `orchestrator history`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.history.estimates import expected_durations
from orchestrator.history.record import run_from_folder
from orchestrator.history.store import HistoryRun, HistoryStore, NotebookOutcome, PastRun, history_path
from orchestrator.plan.spec import ResolvedPlan

log = logging.getLogger("orchestrator.history")

__all__ = ["HistoryRun", "HistoryStore", "NotebookOutcome", "PastRun", "expected_durations", "history_path",
           "planning_durations", "remember_run", "run_from_folder"]


def remember_run(run_dir: Path, store: HistoryStore | None = None) -> str | None:
    """Record the finished run in `run_dir`. Never raises: the history is a help, and a run's outcome must
    not depend on it. Returns a warning to show when it could not be recorded."""
    store = store or HistoryStore()
    try:
        store.record(run_from_folder(run_dir))
    except (OrchestratorError, OSError) as error:
        log.debug("run %s not recorded in the history: %s", run_dir, error)
        return f"the run was not recorded in the history {store.path}: {error}"
    except Exception as error:  # noqa: BLE001 - sqlite3 errors of any kind (disk full, locked too long)
        return f"the run was not recorded in the history {store.path}: {type(error).__name__}: {error}"
    return None


def planning_durations(plan: ResolvedPlan, store: HistoryStore | None = None) -> dict[str, float]:
    """Expected durations for scheduling; an unreadable history only costs the ordering, never the run."""
    try:
        return expected_durations(plan, store or HistoryStore())
    except Exception as error:  # noqa: BLE001 - same reason as remember_run
        log.warning("run history not used (%s)", error)
        return expected_durations(plan, None)
