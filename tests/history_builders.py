"""Fake run folders for the history tests: results.json as a run writes it, without running kernels
(report_builders.write_run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.report_builders import write_run


@dataclass
class FakeStep:
    notebook: str
    status: str = "passed"
    duration_s: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> str:
        return self.notebook.removesuffix(".ipynb").replace("/", "_")


def fake_run(run_dir: Path, *, run_id: str, started_at: str, root: Path, steps: list[FakeStep],
             branch: str | None = "main", commit: str | None = "c0ffee", status: str | None = None,
             backend: str = "local") -> Path:
    """Write a run folder holding a finished run of `steps`."""
    results = [
        {"schema": 1, "step": s.step, "notebook": s.notebook, "status": s.status, "duration_s": s.duration_s,
         "attempts": s.attempts, "metrics": s.metrics, "started_at": started_at, "finished_at": started_at,
         "output_notebook": None, **s.extra}
        for s in steps
    ]
    overall = status or ("passed" if all(s.status in ("passed", "skipped") for s in steps) else "failed")
    return write_run(run_dir, results, files=False, run_id=run_id, backend=backend, experiment=root.name,
                     status=overall, started_at=started_at, finished_at=started_at, root=str(root), commit=commit,
                     branch=branch)
