"""Backends behind one small interface, chosen by name (docs/architecture.md#backends-behind-one-interface).

Each backend module is imported only when chosen, so the local path never imports an Azure SDK.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.errors import InvalidInputError, Problem
from orchestrator.plan.spec import ResolvedPlan
from orchestrator.progress import Progress
from orchestrator.results import RunResults
from steps.step_result import StepResult

# name -> "module:class"
BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "azureml": "orchestrator.azureml.backend:AzureMLBackend",
}


class StopRequest:
    """A thread-safe request to stop a run early, with the reason recorded in results.json.

    Set from outside the backend's own loop: a DevOps cancellation watcher thread, a test. The backend
    treats it like Ctrl-C (every kernel stopped, the run folder keeps what finished).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: str | None = None

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def reason(self) -> str | None:
        return self._reason if self._event.is_set() else None


@dataclass(frozen=True)
class CarriedResult:
    """A result kept from an earlier run instead of running the notebook again, and where its files are."""

    result: StepResult
    source_dir: Path  # the step folder of the earlier run: executed notebook, kernel.log, HTML page
    origin: str | None = None  # the run it comes from; None: the run being repaired (RunOptions.repairs)


@dataclass
class RunOptions:
    run_dir: Path
    run_id: str
    jobs: int | None = None  # local slots; None = CPU count
    gpu_fallback: str = "skip"  # "skip" | "cpu": what a GPU step does on a machine without GPUs
    carried: dict[str, CarriedResult] = field(default_factory=dict)  # step id -> result kept from an earlier run
    repairs: str | None = None  # run id this run repairs
    wait: bool = True
    stop: StopRequest = field(default_factory=StopRequest)
    # step id -> expected seconds (run history, else the plan): the local backend starts the longest chains first
    expected_durations: dict[str, float] = field(default_factory=dict)


@dataclass
class RunOutcome:
    status: str  # passed | failed | interrupted
    results: RunResults  # the final results.json


class Backend(Protocol):
    name: str

    def run(self, plan: ResolvedPlan, options: RunOptions, progress: Progress) -> RunOutcome: ...


def get_backend(name: str, **settings: Any) -> Backend:
    """The backend called `name`, built with its own settings (e.g. the Azure ML workspace)."""
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise InvalidInputError([Problem("--backend", name, f"unknown backend; expected one of: {known}")])
    module_name, class_name = BACKENDS[name].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class(**settings)
    return backend
