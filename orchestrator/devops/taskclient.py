"""The server task's callback API: plan events, the live feed, the persisted log and timeline records.

Plain HTTP, because the Python SDK has no plan-event or feed method and its `update_records` cannot
serialise its own body (docs/devops-protocol.md#task-events, docs/devops-protocol.md#python-sdk-coverage). Every route hangs off
`BASE = {PlanUrl}/{ProjectId}/_apis/distributedtask/hubs/{HubName}/plans/{PlanId}` (2.), with the
api-versions Microsoft's samples and crank use against the live service:
- events `2.0-preview.1` (2.2; the REST reference also documents 7.1-preview.1),
- feed, logs and records `4.1` (2.4, 2.5, 2.3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from orchestrator.devops.context import DevOpsContext, ServerTask
from orchestrator.devops.http import (
    DEFAULT_POLICY,
    DevOpsAuthError,
    DevOpsError,
    DevOpsHttp,
    RetryPolicy,
    TransientError,
    call_with_retries,
)

log = logging.getLogger("orchestrator.devops")

EVENTS_API = "2.0-preview.1"
FEED_API = "4.1"
LOGS_API = "4.1"
RECORDS_API = "4.1"
# The agent's limits for feed posts (docs/devops-protocol.md#live-feed).
FEED_LINES_PER_POST = 100
FEED_LINE_CHARS = 1024
# The helper library pages logs at 8 MB (2.5); our log is a summary, so one page, cut in the middle if need be.
LOG_PAGE_BYTES = 8 * 1024 ** 2
# TaskResult names (2.2); "succeededWithIssues" etc. also accepted by the server.
TASK_RESULTS = ("succeeded", "succeededWithIssues", "failed", "canceled", "skipped", "abandoned")


# Results that mean the job or task was stopped from DevOps, not ended by its own work.
CANCELLED_RESULTS = frozenset({"canceled", "cancelled", "abandoned"})


@dataclass(frozen=True)
class TaskState:
    """What the timeline says about our task and its job; states compared lower-cased."""

    task_state: str | None
    task_result: str | None
    job_state: str | None
    job_result: str | None

    @property
    def task_completed(self) -> bool:
        return self.task_state == "completed"

    @property
    def job_completed(self) -> bool:
        return self.job_state == "completed"

    def describe(self) -> str:
        if self.task_completed:
            return f"the task is completed in Azure DevOps (result={self.task_result or 'unknown'})"
        if self.job_completed:
            return f"the job is completed in Azure DevOps (result={self.job_result or 'unknown'})"
        return f"task state={self.task_state or 'unknown'}"


def _lower(value: Any) -> str | None:
    return str(value).lower() if value is not None else None


def clip_feed_line(line: str) -> str:
    """One feed line: no line breaks inside, at most FEED_LINE_CHARS characters (the agent truncates too)."""
    line = line.replace("\r", " ").replace("\n", " ")
    return line if len(line) <= FEED_LINE_CHARS else line[: FEED_LINE_CHARS - 1] + "\u2026"


class TaskClient:
    """Calls for one server task. Raises DevOpsError subclasses; the caller decides what is fatal."""

    def __init__(self, context: DevOpsContext, policy: RetryPolicy = DEFAULT_POLICY,
                 http: DevOpsHttp | None = None) -> None:
        if context.task is None:
            raise ValueError("this DevOps context has no server task (an agent job or a schedule)")
        self.context = context
        self.task: ServerTask = context.task
        self.policy = policy
        self.http = http or DevOpsHttp(context.token.reveal(), policy)
        t = self.task
        self.base = (f"{context.collection_url}/{quote(context.project, safe='')}/_apis/distributedtask/hubs/"
                     f"{quote(t.hub_name, safe='')}/plans/{quote(t.plan_id, safe='')}")
        self._records_url = f"{self.base}/timelines/{quote(t.timeline_id, safe='')}/records"

    def close(self) -> None:
        self.http.close()

    # ---- events (2.2) ----------------------------------------------------------------------------------

    def task_started(self) -> None:
        self.http.request("POST", f"{self.base}/events", params={"api-version": EVENTS_API},
                          json_body={"name": "TaskStarted", "taskId": self.task.task_instance_id,
                                     "jobId": self.task.job_id})

    def task_completed(self, result: str) -> bool:
        """Send TaskCompleted. Returns False, sending nothing more, when a retry finds that the task is
        already completed: a timed-out or 5xx POST may have been applied (delivery ambiguity, docs/devops-protocol.md#pitfalls)."""
        if result not in TASK_RESULTS:
            raise ValueError(f"unknown task result {result!r}; expected one of {', '.join(TASK_RESULTS)}")
        body = {"name": "TaskCompleted", "taskId": self.task.task_instance_id, "jobId": self.task.job_id,
                "result": result}
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            if tries > 1 and self._completed_quietly():
                return False
            self.http.request("POST", f"{self.base}/events", params={"api-version": EVENTS_API}, json_body=body,
                              retry=False)
            return True

        return call_with_retries(once, self.policy, "send TaskCompleted")

    def _completed_quietly(self) -> bool:
        """One look at the task record between TaskCompleted tries; transient trouble means 'not known'."""
        try:
            return self.state(retry=False).task_completed
        except DevOpsAuthError:
            raise
        except (DevOpsError, TransientError, requests.RequestException):
            return False

    # ---- live feed (2.4) -------------------------------------------------------------------------------

    def post_feed(self, lines: Sequence[str], *, policy: RetryPolicy | None = None) -> None:
        """Post lines to the job's console feed, FEED_LINES_PER_POST at a time. The feed belongs to the job
        record (JobId); stepId = TaskInstanceId attaches the lines to our task (2.4)."""
        clipped = [clip_feed_line(line) for line in lines]
        url = f"{self.base}/timelines/{quote(self.task.timeline_id, safe='')}/records/{quote(self.task.job_id, safe='')}/feed"
        for start in range(0, len(clipped), FEED_LINES_PER_POST):
            chunk = clipped[start:start + FEED_LINES_PER_POST]
            self.http.request("POST", url, params={"api-version": FEED_API}, policy=policy,
                              json_body={"value": chunk, "count": len(chunk), "stepId": self.task.task_instance_id})

    # ---- persisted log (2.5) ---------------------------------------------------------------------------

    def upload_log(self, text: str) -> int:
        """Create a log, append `text`, and point the task's timeline record at it. Returns the log id."""
        created = self.http.request("POST", f"{self.base}/logs", params={"api-version": LOGS_API},
                                    json_body={"path": f"logs\\{self.task.task_instance_id}"})
        if not isinstance(created, dict) or not isinstance(created.get("id"), int):
            raise DevOpsError("Azure DevOps answered the log creation without a log id")
        log_id = created["id"]
        data = text.encode("utf-8")
        if len(data) > LOG_PAGE_BYTES:
            half = LOG_PAGE_BYTES // 2 - 64
            data = data[:half] + b"\n[... log cut in the middle ...]\n" + data[-half:]
        self.http.request("POST", f"{self.base}/logs/{log_id}", params={"api-version": LOGS_API}, data=data,
                          content_type="application/octet-stream")
        # The typed model is TaskLogReference {id, location}; send the object (2.5 recommendation).
        reference = {"id": log_id, "location": created.get("location")}
        self.update_task_record({"log": reference})
        return int(log_id)

    # ---- timeline records (2.3, 2.6) -------------------------------------------------------------------

    def update_task_record(self, fields: dict[str, Any]) -> None:
        record = {"id": self.task.task_instance_id, **fields}
        self.http.request("PATCH", self._records_url, params={"api-version": RECORDS_API},
                          json_body={"value": [record], "count": 1})

    def records(self, *, retry: bool = True) -> list[dict[str, Any]]:
        """All records of the timeline: there is no single-record GET (2.3)."""
        answer = self.http.request("GET", self._records_url, params={"api-version": RECORDS_API}, retry=retry)
        value = answer.get("value") if isinstance(answer, dict) else answer
        return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []

    def state_if_known(self, *, otherwise: str) -> TaskState | None:
        """state(), or None when DevOps cannot be read: logged with what the caller does `otherwise`. An
        authentication failure is raised: nothing later would succeed either."""
        try:
            return self.state()
        except DevOpsAuthError:
            raise
        except DevOpsError as exc:
            log.warning("devops task state unknown, %s: %s", otherwise, exc)
            return None

    def state(self, *, retry: bool = True) -> TaskState:
        by_id = {str(r.get("id", "")).lower(): r for r in self.records(retry=retry)}
        task = by_id.get(self.task.task_instance_id.lower(), {})
        job = by_id.get(self.task.job_id.lower(), {})
        return TaskState(task_state=_lower(task.get("state")), task_result=_lower(task.get("result")),
                         job_state=_lower(job.get("state")), job_result=_lower(job.get("result")))
