"""Azure DevOps reporting: a run folder as a test run (executed notebooks attached), the live feed, the
persisted log and the server job's TaskCompleted callback. See docs/devops.md.

Modules: context (where the target and token come from), message (queue message files), http (retries and
auth rules shared by every call), fields (what a notebook becomes in a test result), testrun (the test run,
through the azure-devops SDK), taskclient (the server task's callback API), live (feed while running,
cancellation watcher), publish (the order and idempotency of a whole report).

Names are loaded on first use, so `import orchestrator.devops` stays light (docs/architecture.md#parts-and-data-flow).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real types for mypy; at run time each name is imported on first use (__getattr__)
    from orchestrator.devops.context import DevOpsContext, Secret, ServerTask, token_from_file
    from orchestrator.devops.http import DevOpsAuthError, DevOpsError, RetryPolicy
    from orchestrator.devops.live import CancellationWatcher, LiveReporter
    from orchestrator.devops.message import decode_body, read_message_file
    from orchestrator.devops.publish import (
        PublishOutcome,
        close_server_task,
        complete_server_job,
        publish_run,
        report_to_devops,
        task_result_for,
    )
    from orchestrator.devops.taskclient import TaskClient
    from orchestrator.devops.testrun import PublishOptions, TestRunOutcome, require_sdk

_EXPORTS = {
    "DevOpsContext": "context", "Secret": "context", "ServerTask": "context", "token_from_file": "context",
    "read_message_file": "message", "decode_body": "message",
    "RetryPolicy": "http", "DevOpsError": "http", "DevOpsAuthError": "http",
    "PublishOptions": "testrun", "TestRunOutcome": "testrun", "require_sdk": "testrun",
    "TaskClient": "taskclient",
    "LiveReporter": "live", "CancellationWatcher": "live",
    "PublishOutcome": "publish", "publish_run": "publish", "complete_server_job": "publish",
    "report_to_devops": "publish", "close_server_task": "publish", "task_result_for": "publish",
}

__all__ = ["CancellationWatcher", "DevOpsAuthError", "DevOpsContext", "DevOpsError", "LiveReporter",
           "PublishOptions", "PublishOutcome", "RetryPolicy", "Secret", "ServerTask", "TaskClient", "TestRunOutcome",
           "close_server_task", "complete_server_job", "decode_body", "publish_run", "read_message_file",
           "report_to_devops", "require_sdk", "task_result_for", "token_from_file"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator.devops' has no attribute {name!r}")
    return getattr(importlib.import_module(f"orchestrator.devops.{module}"), name)
