"""Builders and fixtures for the DevOps tests: run folders made in tmp from tiny fixtures (no kernels), a
context pointing at the strict server, and a retry policy with tiny delays.

Import what a test module needs: `from tests.conftest_devops import FAST, devops_server, make_run_folder, ...`.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.devops.context import DevOpsContext
from orchestrator.devops.http import RetryPolicy
from tests.devops_server import DevOpsServer
from tests.report_builders import write_run

__all__ = ["BODY", "FAST", "HANG_POLICY", "LONG_TRACEBACK", "default_steps", "devops_server", "make_run_folder",
           "run_dir", "server_context", "step"]

# Tiny delays: a retry costs a few milliseconds. Timeouts stay generous so that a busy machine never turns
# a slow answer into a retry that a test did not expect; tests that make the server hang use HANG_POLICY.
FAST = RetryPolicy(attempts=4, backoff_s=0.01, max_backoff_s=0.05, budget_s=10.0, connect_timeout_s=5.0,
                   read_timeout_s=5.0, jitter=0.0)
HANG_POLICY = replace(FAST, read_timeout_s=0.5)

BODY: dict[str, Any] = {"job": "kick_off", "version": 1,
        "repository": {"url": "https://dev.azure.com/org/proj/_git/repo", "commit": "abc123", "ref": "refs/pull/7/merge"},
        "plan": "orchestrator.yml", "build": {"id": "1234", "number": "20261126.3"}}

LONG_TRACEBACK = "\x1b[0;31mTraceback (most recent call last)\x1b[0m\n" + "".join(
    f"  File \"<cell>\", line {i}, in f{i}\n    f{i + 1}()\n" for i in range(200)) + "ValueError: bad value"


def step(notebook: str, status: str, **extra: Any) -> dict[str, Any]:
    """A step result as the step contract writes it (docs/architecture.md#step-contract)."""
    data: dict[str, Any] = {
        "schema": 1, "step": re.sub(r"[^A-Za-z0-9]+", "_", notebook.removesuffix(".ipynb")).strip("_").lower(),
        "notebook": notebook, "status": status, "started_at": "2026-11-26T10:00:00.000000Z",
        "finished_at": "2026-11-26T10:00:12.500000Z", "duration_s": 12.5, "attempts": 1, "target": "cpu",
        "environment": "cpu", "kernel": "python3", "parameters": {}, "metrics": {}, "expectations": [],
        "output_notebook": notebook.rsplit("/", 1)[-1], "warnings": []}
    if status == "skipped":
        data.update(started_at=None, finished_at=None, duration_s=0.0, reason="work in progress")
    data.update(extra)
    return data


def default_steps() -> list[dict[str, Any]]:
    return [
        step("examples/00_prepare.ipynb", "passed", metrics={"rows": 100}),
        step("examples/01_train.ipynb", "failed", error={"kind": "cell_error", "cell_index": 3, "ename": "ValueError",
                                                          "evalue": "bad value", "traceback": LONG_TRACEBACK}),
        step("examples/models/02_slow.ipynb", "timed_out", error={"kind": "timeout", "cell_index": 1, "ename": None,
                                                                  "evalue": "cell timed out after 60 s", "traceback": ""}),
        step("examples/03_crash.ipynb", "crashed", error={"kind": "kernel_died", "ename": "DeadKernelError",
                                                          "evalue": "kernel died", "traceback": ""}),
        step("examples/04_broken.ipynb", "error", error={"kind": "no_kernel", "ename": "NoSuchKernel",
                                                         "evalue": "no kernel named r", "traceback": ""}),
        step("examples/scratch/05_wip.ipynb", "skipped"),
    ]


def make_run_folder(root: Path, steps: list[dict[str, Any]] | None = None, *, status: str | None = None,
                    run_id: str = "20261126-100000-abc123", html: bool = True,
                    notebook_bytes: int = 0, files: bool = True) -> Path:
    """A finished run folder as the report leaves it (report_builders.write_run, then junit.xml, report.html
    and, html=True, each notebook's HTML page). notebook_bytes pads each executed notebook (attachment limits)."""
    steps = default_steps() if steps is None else steps
    write_run(root, steps, notebooks=False, files=files, run_id=run_id, experiment="demo",
              started_at="2026-11-26T10:00:00.000000Z", finished_at="2026-11-26T10:01:00.000000Z",
              **({"status": status} if status else {}))
    for s in steps if files else []:
        if s["status"] != "skipped" and s.get("output_notebook"):
            notebook = root / "steps" / s["step"] / s["output_notebook"]
            nb = {"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [],
                             "execution_count": 1}], "metadata": {"padding": "x" * notebook_bytes},
                  "nbformat": 4, "nbformat_minor": 5}
            notebook.write_text(json.dumps(nb), encoding="utf-8")
            if html:
                notebook.with_suffix(".html").write_text(f"<html><body>{s['notebook']}</body></html>", encoding="utf-8")
    (root / "junit.xml").write_text("<?xml version='1.0' encoding='utf-8'?>\n<testsuites tests=\"0\"/>\n",
                                    encoding="utf-8")
    (root / "report.html").write_text("<html><body>report</body></html>", encoding="utf-8")
    return root


def server_context(server: DevOpsServer, body: dict[str, Any] | None = None, **overrides: Any) -> DevOpsContext:
    """The context a kick_off message for `server`'s job gives."""
    return DevOpsContext.from_properties(server.message_properties(**overrides), BODY if body is None else body)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_folder(tmp_path / "run")
