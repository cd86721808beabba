"""Atomic file writes: the one writer for every file a reader may open while it is being written
(result.json, results.json, plan.json, executed notebooks, junit.xml, report pages, exported pipelines).

Run folders are read while they are written (the report mid-run, a browser, the DevOps agent, a rerun) and
the writer may be killed at any moment, hence a temporary file in the same folder renamed into place with
os.replace. The temporary name is unique per process and call, so two writers of the same file never share
one. It is opened with "x" rather than made by mkstemp, so the file gets the permissions any new file gets
(0666 less the umask; mkstemp's are 0600, and a report is meant to be shared).
Standard library only: the step scripts use it on every Azure ML node.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON as every run file is written: indented, UTF-8 kept readable, one final newline."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
