"""The run record of an Azure ML run, from whatever each notebook node left behind.

Used in two places with the same rules: inside the pipeline by the report node (findings from MLflow), and
on the submitting machine by the backstop (findings from the job's downloaded outputs). The pipeline
carries the list of steps it should have (`expected`, a literal input of the report node), so a node that
never started is reported as such instead of silently missing (issue 3, item 2).

Imports nothing beyond the standard library, orchestrator.results and the step result model
(steps/step_result.py): the report node ships these modules.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from orchestrator.results import RESULTS_FILE, RunResults, overall_status, utc_now, write_json_atomic
from steps.step_result import StepError, StepResult, str_or_none

# A literal input larger than this is sent compressed: it is also a command-line argument of the report
# node, and Linux caps one argument at 128 KiB (MAX_ARG_STRLEN).
EXPECTED_INLINE_LIMIT = 48 * 1024
COMPRESSED_PREFIX = "z:"

# What a finding says about a node that left no result.json.
FINISHED, FAILED, CANCELLED, NOT_STARTED, RUNNING = "finished", "failed", "cancelled", "not_started", "running"
NEVER_STARTED = "the step never started: the pipeline ended before it ran (cancelled, or it could not be scheduled)"


@dataclass(frozen=True)
class Finding:
    """What is known about one notebook node."""

    state: str  # FINISHED | FAILED | CANCELLED | NOT_STARTED | RUNNING
    result: StepResult | None = None  # its result.json, when it wrote one
    where: str = ""  # where a person can look further (a run id, a studio link)


# ---------------------------------------------------------------------------------------- expected steps


@dataclass(frozen=True)
class ExpectedStep:
    """One step the report must account for: an entry of the report node's `expected` input, in plan order."""

    step: str  # the step id (the notebook node's name)
    notebook: str
    target: str | None = None
    environment: str | None = None
    after: tuple[str, ...] = ()  # step ids
    skip: str | None = None  # why the plan skips it

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"step": self.step, "notebook": self.notebook, "target": self.target,
                                "environment": self.environment}
        if self.after:
            data["after"] = list(self.after)
        if self.skip is not None:
            data["skip"] = self.skip
        return data

    @classmethod
    def from_json(cls, raw: object) -> ExpectedStep:
        if not isinstance(raw, dict) or not isinstance(raw.get("step"), str):
            raise ValueError("expected a JSON list of step entries, each with its `step` id")
        after = raw.get("after")
        return cls(step=raw["step"], notebook=str_or_none(raw.get("notebook")) or raw["step"],
                   target=str_or_none(raw.get("target")), environment=str_or_none(raw.get("environment")),
                   after=tuple(str(dep) for dep in after) if isinstance(after, list) else (),
                   skip=str_or_none(raw.get("skip")) or None)


def expected_entries(plan: Any, skips: Mapping[str, str]) -> list[ExpectedStep]:
    """One entry per step of the plan, in plan order: what the report must account for."""
    return [ExpectedStep(step=step.id, notebook=step.notebook, target=step.target, environment=step.environment,
                         after=tuple(step.after), skip=skips.get(step.id)) for step in plan.steps]


def encode_expected(entries: Sequence[ExpectedStep], *, always_compressed: bool = False) -> str:
    """JSON, or its compressed "z:" form when long (always_compressed: whatever its length)."""
    from orchestrator.azureml.names import json_arg  # quote-safe JSON for the command line

    data = [entry.to_json() for entry in entries]
    text = json_arg(data)
    if len(text.encode("utf-8")) <= EXPECTED_INLINE_LIMIT and not always_compressed:
        return text
    packed = zlib.compress(json.dumps(data, separators=(",", ":")).encode("utf-8"), 9)
    return COMPRESSED_PREFIX + base64.urlsafe_b64encode(packed).decode("ascii")


def decode_expected(text: str) -> list[ExpectedStep]:
    """Raises ValueError for anything that is not a list of step entries."""
    if text.startswith(COMPRESSED_PREFIX):
        text = zlib.decompress(base64.urlsafe_b64decode(text[len(COMPRESSED_PREFIX) :])).decode("utf-8")
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of step entries")
    return [ExpectedStep.from_json(entry) for entry in data]


# ------------------------------------------------------------------------------------------- assembling


def _base(entry: ExpectedStep, status: Literal["skipped", "error"], **fields: Any) -> StepResult:
    """A result for a node that left none: it never ran (attempts 0) as far as anyone can tell."""
    return StepResult(step=entry.step, notebook=entry.notebook, status=status, attempts=0, target=entry.target,
                      environment=entry.environment, **fields)


def skipped(entry: ExpectedStep, reason: str) -> StepResult:
    return _base(entry, "skipped", reason=reason)


def errored(entry: ExpectedStep, ename: str, evalue: str) -> StepResult:
    return _base(entry, "error", error=StepError(kind="infrastructure", ename=ename, evalue=evalue))


def step_result(entry: ExpectedStep, finding: Finding | None, done: Mapping[str, StepResult]) -> StepResult:
    """The result of one expected step, given what was found and the results of the steps before it."""
    if entry.skip:
        return skipped(entry, entry.skip)
    if finding is not None and finding.result is not None:
        result = finding.result
        if result.notebook == result.step:  # a file that named no notebook
            result = result.but(notebook=entry.notebook)
        return result
    where = f" ({finding.where})" if finding is not None and finding.where else ""
    state = finding.state if finding is not None else NOT_STARTED
    if state in (NOT_STARTED, CANCELLED):
        # Data edges: a node after one that did not pass is never started by Azure ML. That is the same
        # outcome the runner records locally for such a step: skipped, naming the dependency.
        for dep in entry.after:
            previous = done.get(dep)
            if previous is not None and not previous.passed:
                return skipped(entry, f"after {previous.notebook}, which did not pass")
    if state == NOT_STARTED:
        return errored(entry, "NotStarted", NEVER_STARTED + where)
    if state == CANCELLED:
        return errored(entry, "Cancelled", "the step was cancelled before it wrote a result" + where)
    if state == RUNNING:
        return errored(entry, "NoResult", "the step was still running when the report was built" + where)
    if state == FAILED:
        return errored(entry, "StepFailed", "the step failed before the notebook wrote a result; see the node's "
                       "logs (user_logs/std_log.txt)" + where)
    return errored(entry, "NoResult", "the step finished without a result.json" + where)


def assemble(expected: Sequence[ExpectedStep], findings: Mapping[str, Finding], *, run_id: str,
             title: str, reported_by: str) -> RunResults:
    """The run record (docs/architecture.md#run-folder) of the expected steps, in plan order; the caller adds
    what it knows of the job (dataclasses.replace)."""
    done: dict[str, StepResult] = {}
    for entry in expected:
        done[entry.step] = step_result(entry, findings.get(entry.step), done)
    steps = list(done.values())
    starts = sorted(s.started_at for s in steps if s.started_at is not None)
    ends = sorted(s.finished_at for s in steps if s.finished_at is not None)
    return RunResults(run_id=run_id, status=overall_status(steps, finished=True), steps=steps, backend="azureml",
                      experiment=title, started_at=starts[0] if starts else utc_now(),
                      finished_at=ends[-1] if ends else utc_now(), reported_by=reported_by)


def write(run_dir: Path, results: RunResults) -> Path:
    path = run_dir / RESULTS_FILE
    write_json_atomic(path, results.to_json())
    return path
