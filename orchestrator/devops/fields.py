"""What one notebook becomes in an Azure DevOps test result: outcome, error message, comment and file
names, kept within the documented limits (docs/devops-protocol.md#adding-results, docs/devops-protocol.md#attachments). Pure functions, no I/O."""

from __future__ import annotations

import re

from orchestrator.devops.context import DevOpsContext
from orchestrator.results import RunResults
from steps.step_result import StepResult

# Step status (docs/architecture.md#step-contract) -> TestCaseResult.outcome (docs/devops-protocol.md#adding-results). A status outside the contract (a
# partial record read mid-run says "running") never shows as passed.
OUTCOMES = {"passed": "Passed", "failed": "Failed", "timed_out": "Timeout", "crashed": "Aborted",
            "error": "Error", "skipped": "NotExecuted"}
UNFINISHED_OUTCOME = "Aborted"
# stackTrace and comment: "maxSize= 1000 chars" (SDK docstrings, 3.3). errorMessage has no documented
# limit; junit.xml keeps it within the same 1000, and so do we.
TEXT_LIMIT = 1000
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def attachment_name(name: str) -> str:
    """A file name the attachments API accepts: no ':' (the agent's rule, docs/devops-protocol.md#attachments), no separators or
    control characters; letters, digits, '.', '_', '-' and spaces kept."""
    cleaned = _UNSAFE_NAME.sub("_", name).strip(" .")
    return cleaned[:200] or "attachment"


def error_message(step: StepResult) -> str:
    """What a person reads first in the DevOps results grid for a notebook that did not pass."""
    if step.status == "skipped":
        return f"skipped: {step.reason}" if step.reason else "skipped"
    if step.status == "passed":
        return ""
    parts: list[str] = []
    if step.missed:
        parts.append("expectation missed: " + "; ".join(f"{e.metric} {e.rule} (actual {e.actual!r})"
                                                        for e in step.missed))
    error = step.error
    if error is not None and (error.ename or error.evalue):
        what = ": ".join(part for part in (error.ename, error.evalue) if part)
        parts.append(what + (f" (cell {error.cell_index})" if error.cell_index is not None else ""))
    elif error is not None and error.kind and not step.missed:
        parts.append(error.type_name)
    if not parts:
        parts.append({"timed_out": "timed out", "crashed": "the kernel died"}.get(
            step.status, f"status {step.status}" if step.status in OUTCOMES else "the step did not finish"))
    return "; ".join(parts)


def result_comment(step: StepResult) -> str:
    bits = [f"step {step.id}"]
    if step.attempts and step.attempts > 1:
        bits.append(f"attempts {step.attempts}")
    if step.target:
        bits.append(f"target {step.target}")
    if step.metrics:
        bits.append("metrics " + ", ".join(f"{k}={v}" for k, v in step.metrics.items()))
    if step.warnings:
        bits.append("warnings: " + "; ".join(step.warnings))
    return "; ".join(bits)


def run_comment(run: RunResults, context: DevOpsContext) -> str:
    bits = [f"notebook run {run.run_id}", f"backend {run.backend or 'unknown'}", f"status {run.status}"]
    if context.commit:
        bits.append(f"commit {context.commit}")
    if context.repository_url:
        bits.append(f"repository {context.repository_url}")
    return "; ".join(bits)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def tail(text: str, limit: int) -> str:
    """Keep the end of a traceback: the exception itself is its last line."""
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]
