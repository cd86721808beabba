"""One exception root with structured children (docs/architecture.md#one-error-root).

Each entry point (the CLI, the trigger) turns these into an exit code and a message in exactly one place.
A failing notebook is never an exception: it is a step result with a status.
"""

from __future__ import annotations

from dataclasses import dataclass


# The distribution's name on PyPI (pyproject.toml): `orchestrator` there is an unrelated project.
DISTRIBUTION = "notebook-orchestrator"

# Exit codes (docs/architecture.md#commands-and-exit-codes).
EXIT_PASSED = 0
EXIT_NOT_PASSED = 1
EXIT_INVALID_INPUT = 2
EXIT_INFRASTRUCTURE = 3
EXIT_INTERRUPTED = 130


def exit_code_for(run_status: str | None) -> int:
    """The exit code of a command that ran (or handed over) a pipeline, from the run's status.

    "submitted": an Azure ML run without --wait, handed over to the service; None: nothing was run (a trigger
    message that needed no run)."""
    if run_status in (None, "passed", "submitted"):
        return EXIT_PASSED
    return EXIT_INTERRUPTED if run_status == "interrupted" else EXIT_NOT_PASSED


class OrchestratorError(Exception):
    """Root of every error the orchestrator raises on purpose."""

    exit_code = EXIT_INFRASTRUCTURE


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is and what was expected."""

    file: str
    location: str  # "line 12" or a key path such as "notebooks[3].expect.accuracy"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.location}" if self.location else self.file
        return f"{where}: {self.message}"


class InvalidInputError(OrchestratorError):
    """A user mistake (plan, notebook list, message, argument). Carries every problem found at once."""

    exit_code = EXIT_INVALID_INPUT

    def __init__(self, problems: list[Problem] | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(file="", location="", message=problems)]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __reduce__(self) -> tuple[type, tuple[list[Problem]]]:  # picklable across processes
        return (type(self), (self.problems,))


class PlanError(InvalidInputError):
    """orchestrator.yml (or notebook metadata) is invalid."""


class InfrastructureError(OrchestratorError):
    """A service is unreachable, auth was refused, or the machine cannot do what was asked."""

    exit_code = EXIT_INFRASTRUCTURE


class MissingExtraError(OrchestratorError):
    """An optional dependency is not installed; the message names the exact pip command."""

    exit_code = EXIT_INFRASTRUCTURE

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed; run: pip install '{DISTRIBUTION}[{extra}]'")
