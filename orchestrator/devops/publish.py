"""Report a finished run to Azure DevOps, in the one order that works (docs/devops-protocol.md#timeouts-token-lifetime-cancellation "Ordering"):
the test run first, then the task's persisted log, then exactly one TaskCompleted - last, because after it
the pipeline moves on and the token's further life is unspecified.

Idempotent, because delivery is at least once and a report step can run twice (a rerun from the studio,
a watchdog, a retried CLI): RUN_DIR/devops.json records what was done, keyed by the run and by
(PlanId, JobId, TaskInstanceId) (docs/devops-protocol.md#pitfalls, docs/devops-protocol.md#service-checklist), and before closing the task we ask DevOps whether its
timeline record is already `completed` (as crank does). A second attempt to complete the same task then
sends nothing. The marker holds ids and results, never the token.

Nothing here raises for a DevOps failure: problems are logged and returned, because a reporting failure
must never become a failure of the notebooks' own run (the caller picks the exit code).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.http import DEFAULT_POLICY, DevOpsAuthError, DevOpsError, RetryPolicy, utc_iso
from orchestrator.devops.taskclient import TaskClient
from orchestrator.devops.fields import error_message
from orchestrator.devops.testrun import PublishOptions, TestRunOutcome, publish_test_run
from orchestrator.errors import MissingExtraError
from orchestrator.results import RunResults
from orchestrator.text import show_duration
from orchestrator.results import load_results, write_json_atomic

log = logging.getLogger("orchestrator.devops")

MARKER_FILE = "devops.json"


@dataclass
class PublishOutcome:
    test_run: TestRunOutcome | None = None
    log_id: int | None = None
    task_result: str | None = None       # the result sent, or that would have been sent
    task_completed: bool = False         # this call sent TaskCompleted and DevOps accepted it
    already_completed: str | None = None  # why no TaskCompleted was needed, when it was not
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and (self.test_run is None or self.test_run.ok)

    @property
    def all_problems(self) -> list[str]:
        return (self.test_run.problems if self.test_run else []) + self.problems


def task_result_for(run_status: str) -> str:
    """results.json status -> TaskResult (docs/devops-protocol.md#task-events). Anything unfinished or unknown fails the task."""
    return {"passed": "succeeded", "interrupted": "canceled", "canceled": "canceled",
            "cancelled": "canceled"}.get(run_status, "failed")


# ---- the marker ------------------------------------------------------------------------------------------

def _read_marker(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"schema": 1, "test_runs": {}, "tasks": {}}
    if not isinstance(data, dict):
        data = {}
    data.setdefault("schema", 1)
    for key in ("test_runs", "tasks"):
        if not isinstance(data.get(key), dict):
            data[key] = {}
    return data


def _update_marker(run_dir: Path, section: str, key: str, entry: dict[str, Any]) -> None:
    data = _read_marker(run_dir)
    data[section][key] = entry
    try:
        write_json_atomic(run_dir / MARKER_FILE, data)
    except OSError as exc:  # a read-only run folder (a mounted Azure ML input) must not fail the report
        log.warning("devops marker not written path=%s reason=%s", run_dir / MARKER_FILE, exc)


def _test_run_key(context: DevOpsContext, run_id: str) -> str:
    return f"{context.collection_url}|{context.project}|build={context.build_id or '-'}|run={run_id}"


# ---- the steps -------------------------------------------------------------------------------------------

def publish_run(run_dir: Path, context: DevOpsContext, *, policy: RetryPolicy = DEFAULT_POLICY,
                options: PublishOptions = PublishOptions(), force: bool = False) -> TestRunOutcome:
    """Publish RUN_DIR as a test run, unless this run folder already did so for the same target and run
    (force=True publishes again). Raises InvalidInputError only when RUN_DIR holds no results.json."""
    results = load_results(run_dir)
    key = _test_run_key(context, results.run_id)
    done = _read_marker(run_dir)["test_runs"].get(key)
    if done and done.get("state") == "Completed" and not force:
        log.info("devops test run already published id=%s (%s); not publishing again", done.get("id"), MARKER_FILE)
        return TestRunOutcome(run_id=done.get("id"), url=done.get("url"), state="Completed",
                              results=int(done.get("results") or 0), attachments=int(done.get("attachments") or 0))
    outcome = publish_test_run(run_dir, context, policy=policy, options=options)
    if outcome.run_id is not None:
        _update_marker(run_dir, "test_runs", key, {
            "id": outcome.run_id, "url": outcome.url, "state": outcome.state, "results": outcome.results,
            "attachments": outcome.attachments, "at": utc_iso()})
    return outcome


def complete_server_job(run_dir: Path, context: DevOpsContext, *, result: str | None = None,
                        test_run: TestRunOutcome | None = None, policy: RetryPolicy = DEFAULT_POLICY,
                        notes: list[str] | None = None) -> PublishOutcome:
    """Upload the task's persisted log, then send exactly one TaskCompleted (unless the task is completed
    already). result: succeeded | failed | canceled | ... (default: from results.json's status)."""
    results = load_results(run_dir)
    if context.task is None:
        return PublishOutcome(test_run=test_run)
    outcome = PublishOutcome(test_run=test_run, task_result=result or task_result_for(results.status))
    text = render_task_log(results, test_run, outcome.task_result, notes or [])
    _close(context, outcome, text, policy, run_dir)
    return outcome


def report_to_devops(run_dir: Path, context: DevOpsContext, *, result: str | None = None,
                     policy: RetryPolicy = DEFAULT_POLICY, options: PublishOptions = PublishOptions(),
                     publish_tests: bool = True, notes: list[str] | None = None) -> PublishOutcome:
    """The whole report: the test run, then (when a server task waits) its log and TaskCompleted.

    Call it in a `finally` once the run is over, so the waiting job is closed on every path (docs/devops-protocol.md#pitfalls).
    """
    notes = list(notes or [])
    test_run = None
    if publish_tests:
        try:
            test_run = publish_run(run_dir, context, policy=policy, options=options)
        except MissingExtraError as exc:
            if context.task is None:
                raise
            # The waiting job must still be closed, or it hangs until its timeout (docs/devops-protocol.md#pitfalls).
            notes.append(f"problem: test results not published: {exc}")
            log.error("devops test results not published: %s", exc)
    if context.task is None:
        return PublishOutcome(test_run=test_run)
    outcome = complete_server_job(run_dir, context, result=result, test_run=test_run, policy=policy, notes=notes)
    outcome.problems[:0] = [note.removeprefix("problem: ") for note in notes if note.startswith("problem: ")]
    return outcome


def close_server_task(context: DevOpsContext, result: str, lines: list[str], *,
                      policy: RetryPolicy = DEFAULT_POLICY, marker_dir: Path | None = None) -> PublishOutcome:
    """Close a server task with `lines` as its log when there is no run to report (a message that could not
    be understood, a run that never started). marker_dir: where to record it, if anywhere."""
    outcome = PublishOutcome(task_result=result)
    if context.task is not None:
        _close(context, outcome, "\n".join(lines) + "\n", policy, marker_dir)
    return outcome


def _close(context: DevOpsContext, outcome: PublishOutcome, text: str, policy: RetryPolicy,
           marker_dir: Path | None) -> None:
    task = context.task
    assert task is not None and outcome.task_result is not None
    if marker_dir is not None:
        done = _read_marker(marker_dir)["tasks"].get(task.key)
        if done:
            outcome.already_completed = f"{MARKER_FILE} records TaskCompleted ({done.get('result')}) at {done.get('at')}"
            log.info("devops task already completed, nothing sent: %s", outcome.already_completed)
            return
    client = TaskClient(context, policy)
    try:
        if _completed_in_devops(client, outcome, marker_dir):
            return
        try:
            outcome.log_id = client.upload_log(text)
            log.info("devops task log uploaded log_id=%s", outcome.log_id)
        except DevOpsAuthError:
            raise
        except DevOpsError as exc:  # the log is worth less than closing the job: go on
            outcome.problems.append(f"task log not uploaded: {exc}")
            log.error("devops task log not uploaded: %s", exc)
        sent = client.task_completed(outcome.task_result)
        if sent:
            outcome.task_completed = True
            log.info("devops TaskCompleted sent result=%s task=%s", outcome.task_result, task.task_instance_id)
        else:
            outcome.already_completed = "DevOps shows the task completed (an earlier TaskCompleted went through)"
        if marker_dir is not None:
            _update_marker(marker_dir, "tasks", task.key, {"result": outcome.task_result, "at": utc_iso(),
                                                          "log_id": outcome.log_id, "sent": sent})
    except DevOpsAuthError as exc:
        outcome.problems.append(str(exc))
        log.error("devops server job not closed: %s", exc)
    except DevOpsError as exc:
        outcome.problems.append(f"TaskCompleted not sent: {exc}")
        log.error("devops TaskCompleted not sent, the job will wait until its timeout: %s", exc)
    except Exception as exc:  # noqa: BLE001 - e.g. an odd requests error: reported, never raised
        outcome.problems.append(f"TaskCompleted not sent: {type(exc).__name__}: {exc}")
        log.exception("devops TaskCompleted not sent, the job will wait until its timeout")
    finally:
        client.close()


def _completed_in_devops(client: TaskClient, outcome: PublishOutcome, marker_dir: Path | None) -> bool:
    """Skip everything when the task record is already completed (cancelled, timed out, closed by a watchdog
    or an earlier attempt). When the records cannot be read, go on: closing the job matters more."""
    state = client.state_if_known(otherwise="completing anyway")
    if state is None or not state.task_completed:
        return False
    outcome.already_completed = state.describe()
    log.info("devops nothing sent: %s", outcome.already_completed)
    if marker_dir is not None:
        _update_marker(marker_dir, "tasks", client.task.key, {"result": state.task_result, "at": utc_iso(),
                                                              "sent": False})
    return True


def render_task_log(run: RunResults, test_run: TestRunOutcome | None, task_result: str | None,
                    notes: list[str]) -> str:
    """The task's persisted log: what a person opening the server job in DevOps needs to read."""
    lines = [f"Notebook run {run.run_id} (backend {run.backend or 'unknown'}, {run.title}): {run.status}"]
    if run.started is not None:
        lines.append(f"started {utc_iso(run.started)}"
                     + (f", finished {utc_iso(run.finished)} ({show_duration(run.wall_s)})" if run.finished else ""))
    lines.append(" ".join(f"{status}={count}" for status, count in run.counts.items() if count) or "no notebooks")
    lines.append("")
    width = max((len(step.notebook) for step in run.steps), default=0)
    for step in run.steps:
        detail = error_message(step)
        lines.append(f"{step.status.upper():<9} {step.notebook:<{width}}  {show_duration(step.duration_s):>9}"
                     + (f"  {detail}" if detail else ""))
    lines.append("")
    if test_run is not None:
        if test_run.run_id is not None:
            lines.append(f"Test run {test_run.run_id} ({test_run.state or 'not completed'}): {test_run.url or ''}"
                         f" results={test_run.results} attachments={test_run.attachments}")
        lines += [f"attachment skipped: {text}" for text in test_run.skipped_attachments]
        lines += [f"problem: {text}" for text in test_run.problems]
    lines += notes
    if task_result:
        lines.append(f"Task result: {task_result}")
    return "\n".join(lines) + "\n"
