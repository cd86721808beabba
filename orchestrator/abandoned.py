"""A run whose process is gone while results.json still says "running": SIGKILL, the OOM killer, a closed
terminal before SIGHUP was handled, a crash. Its record is settled the first time `report` or `rerun` reads
it, so that no consumer (a CI job publishing junit.xml, a person opening report.html) ever sees it as still
going, or as green with the unfinished notebooks simply missing.

Settling: every step of plan.json without a recorded result gets one. A result.json the step itself wrote
(the process died before recording it) is taken as is; any other step becomes status "error", error kind
"interrupted", saying whether it had started. The run becomes "interrupted". `rerun --failed` then reruns
exactly those steps.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from orchestrator.plan.discovery import RUN_MARKER
from orchestrator.results import RESULTS_FILE, SCHEMA, STATUSES, RunResults, count_statuses, write_json_atomic
from orchestrator.run_folder import PLAN_FILE, read_holder, step_dir
from steps.step_result import StepResult, read_result_file

INTERRUPTED_KIND = "interrupted"
# The status a report shows for a step of a live run that has no result yet; JUnit makes it an error
# (NotFinished), so a report published mid-run never looks green.
PENDING: Final = "pending"


def settle_if_abandoned(run_dir: Path, *, by: str) -> bool:
    """Settle RUN_DIR's record if its run is dead (see module doc); True when it did. `by` names the command
    doing it, for the record. A live run, a finished one, or a folder this tool did not write is left alone."""
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(results, dict) or results.get("status") != "running" or not isinstance(results.get("steps"), list):
        return False
    try:
        fd = os.open(run_dir / RUN_MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False  # no marker: not ours to judge
    try:
        try:
            # Held while settling, so a new run cannot start writing the folder meanwhile.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return False  # a live process is writing it
            raise
        _settle(run_dir, results, by)
        return True
    finally:
        os.close(fd)


def with_pending_steps(run_dir: Path, results: RunResults) -> RunResults:
    """`results` of a run still going, with every step of plan.json that has no result yet added as
    "pending" (for the report only; results.json is not changed): never absent from a report."""
    if results.status != "running":
        return results
    recorded = {step.step for step in results.steps}
    pending = [StepResult(step=p["id"], notebook=str(p.get("notebook") or p["id"]), status=PENDING, attempts=None)
               for p in _planned_steps(run_dir) if isinstance(p.get("id"), str) and p["id"] not in recorded]
    return replace(results, steps=[*results.steps, *pending]) if pending else results


def _settle(run_dir: Path, results: dict[str, Any], by: str) -> None:
    holder = read_holder(run_dir)
    who = f" ({holder})" if holder else ""
    last_written = _mtime(run_dir / RESULTS_FILE)
    recorded = {s.get("step"): s for s in results["steps"] if isinstance(s, dict) and s.get("status") in STATUSES}
    steps: list[dict[str, Any]] = []
    for planned in _planned_steps(run_dir) or [{"id": s.get("step"), "notebook": s.get("notebook")}
                                                for s in results["steps"] if isinstance(s, dict)]:
        step_id = planned.get("id")
        if not isinstance(step_id, str):
            continue
        result = recorded.pop(step_id, None) or _written_by_step(run_dir, step_id) or _interrupted(
            run_dir, planned, who, last_written, _cause(results))
        steps.append(result)
    steps.extend(recorded.values())  # recorded results plan.json does not name: kept, never dropped
    results.update(
        status="interrupted",
        finished_at=results.get("finished_at") or last_written,
        interrupted_by=f"the run's process ended without finishing its record{who}; settled by `orchestrator {by}`",
        steps=steps,
        counts=count_statuses(StepResult.from_json(step) for step in steps),
    )
    write_json_atomic(run_dir / RESULTS_FILE, results)


def _planned_steps(run_dir: Path) -> list[dict[str, Any]]:
    try:
        plan = json.loads((run_dir / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    steps = plan.get("steps") if isinstance(plan, dict) else None
    return [step for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []


def _written_by_step(run_dir: Path, step_id: str) -> dict[str, Any] | None:
    result = read_result_file(step_dir(run_dir, step_id))
    if result is not None and result.step == step_id and result.finished_normally:
        return result.to_json()
    return None


def _cause(results: dict[str, Any]) -> str:
    if results.get("backend") == "azureml":
        # This record follows a job that runs in the workspace: the follower died, not necessarily the job.
        return ("the Azure ML job itself may have gone on: its state is in the studio, and "
                "`orchestrator rerun --backend azureml JOB --failed` reruns what did not complete")
    return "killed (SIGKILL, the out-of-memory killer), or the machine stopped"


def _interrupted(run_dir: Path, planned: dict[str, Any], who: str, when: str, cause: str) -> dict[str, Any]:
    started = step_dir(run_dir, str(planned["id"])).is_dir()
    what = "while this step was running" if started else "before this step started"
    return {
        "schema": SCHEMA,
        "step": planned["id"],
        "notebook": planned.get("notebook") if isinstance(planned.get("notebook"), str) else planned["id"],
        "status": "error",
        "started_at": None,
        "finished_at": when if started else None,
        "duration_s": None,
        "attempts": 1 if started else 0,
        "target": planned.get("target"),
        "environment": planned.get("environment"),
        "kernel": planned.get("kernel"),
        "parameters": planned.get("parameters") if isinstance(planned.get("parameters"), dict) else {},
        "error": {
            "kind": INTERRUPTED_KIND,
            "cell_index": None,
            "ename": "Interrupted",
            "evalue": f"the run's process ended {what}{who}: {cause}",
            "traceback": "",
        },
        "metrics": {},
        "expectations": [],
        "output_notebook": None,
        "warnings": [],
        "output_tail": "",
    }


def _mtime(path: Path) -> str:
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = datetime.now(timezone.utc).timestamp()
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
