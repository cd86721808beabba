"""One pipeline per DevOps task, however often its message is delivered (docs/architecture.md#queue-messages: delivery is at least once;
docs/devops-protocol.md#pitfalls, docs/devops-protocol.md#service-checklist: key on PlanId + JobId + TaskInstanceId).

- Azure ML: the key becomes the pipeline job's *name* (orchestrator.azureml.names.job_name_for_key), and
  submission looks that name up first and never creates a second job with it (azureml/submit.py). The record
  lives in the workspace itself, so it survives a crashed Function instance and works across instances.
- Local backend (`orchestrator handle`): a marker file per key in ORCHESTRATOR_STATE_DIR, created atomically
  (O_EXCL), so a second delivery, even a concurrent one, finds the first and never starts a second run.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.results import utc_now, write_json_atomic

RUNNING, FINISHED = "running", "finished"


def azureml_job_name(key: str) -> str:
    from orchestrator.azureml.names import job_name_for_key

    return job_name_for_key(key)


@dataclass(frozen=True)
class Marker:
    path: Path
    data: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.data.get("status") or RUNNING)

    @property
    def run_dir(self) -> Path | None:
        value = self.data.get("run_dir")
        return Path(value) if value else None

    @property
    def alive(self) -> bool:
        """The process that claimed the key still runs (on this machine): a concurrent duplicate."""
        if self.status != RUNNING or self.data.get("host") != platform.node():
            return False
        try:
            import psutil

            return bool(psutil.pid_exists(int(self.data.get("pid") or 0)))
        except (ImportError, ValueError):
            return False


class LocalMarkers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.json"

    def claim(self, key: str) -> Marker | None:
        """Claim `key` for this process; None when claimed, else the earlier claim (never overwritten)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        data = {"schema": 1, "key": key, "status": RUNNING, "pid": os.getpid(), "host": platform.node(),
                "claimed_at": utc_now(), "run_dir": None}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.read(key)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        return None

    def read(self, key: str) -> Marker:
        path = self.path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {"status": RUNNING}  # a claim being written right now, or a torn one: treat as taken
        return Marker(path, data if isinstance(data, dict) else {"status": RUNNING})

    def update(self, key: str, **fields: Any) -> None:
        marker = self.read(key)
        write_json_atomic(marker.path, {**marker.data, **fields, "updated_at": utc_now()})
