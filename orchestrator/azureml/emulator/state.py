"""What the emulated workspace knows about its jobs: typed, kept in memory and mirrored to state.json, so a
later process (`orchestrator rerun --emulate`, a trigger's watchdog) sees the same workspace."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"Completed", "Failed", "Canceled"})
STATE_FILE = "state.json"
JOB_FILE = "pipeline.yml"


@dataclass
class Child:
    """One node's child job."""

    node: str
    name: str  # also its MLflow run id, when it has a run
    display_name: str | None
    tags: dict[str, str]
    status: str = "Preparing"
    run_id: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> folder
    reuse_key: str | None = None  # set when the node is deterministic
    reused_from: str | None = None  # the child job whose outputs were carried over
    error: str | None = None
    started: float | None = None
    ended: float | None = None


@dataclass
class JobState:
    name: str
    experiment: str
    folder: str
    status: str = "NotStarted"
    run_id: str | None = None  # the pipeline's MLflow run
    children: dict[str, Child] = field(default_factory=dict)  # node name -> child job
    outputs: dict[str, str] = field(default_factory=dict)  # pipeline output -> folder
    assumptions: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    schedule: str | None = None

    def save(self, lock: threading.Lock) -> None:
        with lock:
            data = dataclasses.asdict(self)
        path = Path(self.folder) / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> JobState:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        children = {k: Child(**v) for k, v in data.pop("children", {}).items()}
        return cls(children=children, **data)
