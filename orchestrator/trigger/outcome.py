"""What became of a message, for the front end to act on: complete it, dead-letter it with a reason, or
abandon it for redelivery. Handlers return an Outcome; they never settle messages themselves, so the Function,
the worker and `orchestrator handle` share every decision and differ only in how they carry it out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from orchestrator.errors import EXIT_INFRASTRUCTURE, EXIT_INVALID_INPUT, EXIT_PASSED, OrchestratorError, exit_code_for

Action = Literal["complete", "dead_letter", "abandon"]
COMPLETE: Final = "complete"
DEAD_LETTER: Final = "dead_letter"
ABANDON: Final = "abandon"
# Service Bus keeps DeadLetterReason / DeadLetterErrorDescription as message properties: keep them short.
REASON_CHARS, DESCRIPTION_CHARS = 200, 2000


@dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str = ""          # dead_letter / abandon: one line a person can read
    description: str = ""     # dead_letter: the details (each problem found)
    detail: str = ""          # complete: what was done
    run_status: str | None = None          # local: the run's status; Azure ML: "submitted"
    rescheduled_at: datetime | None = None  # a wrap_up that scheduled its next check
    exit_code: int = EXIT_PASSED           # for `orchestrator handle` (docs/architecture.md#commands-and-exit-codes)

    def summary(self) -> str:
        if self.action == COMPLETE:
            return f"completed: {self.detail}" if self.detail else "completed"
        text = f"{self.action.replace('_', '-')}ed: {self.reason}"
        return text + (f" ({self.description})" if self.description and self.description != self.reason else "")


class Refused(OrchestratorError):
    """Raised inside a handler when the message cannot be acted on, with what a person should read.

    Part of the one error root, so its exit code follows the same table: 2 by default (the message is at
    fault), 3 when the service's own settings are (docs/architecture.md#commands-and-exit-codes)."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, reason: str, problems: list[str] | tuple[str, ...] = (), *,
                 exit_code: int = EXIT_INVALID_INPUT) -> None:
        self.reason = reason
        self.problems = tuple(problems)
        self.exit_code = exit_code
        super().__init__(reason)

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, ...]], dict[str, int]]:  # picklable
        return (type(self), (self.reason, self.problems), {"exit_code": self.exit_code})


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def completed(detail: str = "", *, run_status: str | None = None,
              rescheduled_at: datetime | None = None) -> Outcome:
    return Outcome(COMPLETE, detail=detail, run_status=run_status, rescheduled_at=rescheduled_at,
                   exit_code=exit_code_for(run_status))


def dead_letter(reason: str, description: str = "", *, exit_code: int = EXIT_INVALID_INPUT) -> Outcome:
    return Outcome(DEAD_LETTER, reason=clip(reason, REASON_CHARS), description=clip(description, DESCRIPTION_CHARS),
                   exit_code=exit_code)


def abandon(reason: str) -> Outcome:
    return Outcome(ABANDON, reason=clip(reason, REASON_CHARS), exit_code=EXIT_INFRASTRUCTURE)
