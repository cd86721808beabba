# mypy: disallow-untyped-calls=False
# (nbformat.v4 has no type hints.)
"""Builders for fake run folders (docs/architecture.md#run-folder): results.json, step folders and tiny executed notebooks, for
the report tests. No kernel runs: the notebooks are written with nbformat, outputs included."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from orchestrator.results import count_statuses
from steps.step_result import StepResult

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=timezone.utc)
# A traceback the way nbclient leaves it: ANSI colours, plus characters XML 1.0 forbids.
ANSI_TRACEBACK = (
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m\n"
    "\x1b[0;31mValueError\x1b[0m                                Traceback (most recent call last)\n"
    "Cell \x1b[0;32mIn[8], line 2\x1b[0m\n"
    "\x1b[1;32m----> 2\x1b[0m \x1b[38;5;28;01mraise\x1b[39;00m \x1b[38;5;167;01mValueError\x1b[39;00m(\x1b[38;5;124m'bad'\x1b[39m)\n"
    "progress\x08\x08\x08 done\x00\x0c\n"
    "\x1b[0;31mValueError\x1b[0m: bad <script>alert('x')</script>"
)


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def step_result(notebook: str, status: str, *, start: float | None = 0.0, duration: float | None = 10.0,
                output: bool = True, **extra: Any) -> dict[str, Any]:
    """A step contract result (docs/architecture.md#step-contract) for `notebook`, started `start` seconds after T0."""
    step_id = notebook.removesuffix(".ipynb").replace("/", "_").replace(".", "_")
    finished = None if start is None or duration is None else start + duration
    result: dict[str, Any] = {
        "schema": 1, "step": step_id, "notebook": notebook, "status": status,
        "started_at": iso(start), "finished_at": iso(finished), "duration_s": duration if start is not None else None,
        "attempts": 1, "target": "cpu", "environment": "cpu", "kernel": "python3", "parameters": {},
        "metrics": {}, "expectations": [], "warnings": [],
    }
    if output:
        result["output_notebook"] = notebook.rsplit("/", 1)[-1]
    result.update(extra)
    return result


def every_status() -> list[dict[str, Any]]:
    """One step per status, plus an expectation miss and a top-level notebook."""
    return [
        step_result("examples/00_prepare.ipynb", "passed", start=0, duration=5,
                    metrics={"rows": 1000}, output_tail="prepared 1000 rows\n"),
        step_result("examples/models/01_train.ipynb", "failed", start=5, duration=12.5,
                    parameters={"epochs": 1, "lr": 0.01},
                    error={"kind": "cell_error", "cell_index": 7, "ename": "ValueError", "evalue": "bad",
                           "traceback": ANSI_TRACEBACK},
                    output_tail="epoch 1/1\nloss 0.7\n", warnings=["parameter 'lr' is not declared"]),
        step_result("examples/models/02_eval.ipynb", "failed", start=5, duration=8,
                    metrics={"accuracy": 0.81, "loss": 0.4},
                    expectations=[{"metric": "accuracy", "rule": ">= 0.9", "actual": 0.81, "ok": False},
                                  {"metric": "loss", "rule": "<= 0.5", "actual": 0.4, "ok": True}],
                    error={"kind": "expectation", "ename": "ExpectationMissed",
                           "evalue": "accuracy = 0.81, expected >= 0.9", "traceback": ""}),
        step_result("examples/03_slow.ipynb", "timed_out", start=0, duration=30,
                    error={"kind": "timeout", "cell_index": 2, "ename": "CellTimeoutError",
                           "evalue": "cell exceeded 30s", "traceback": "Timeout waiting for cell 2"}),
        step_result("examples/04_crash.ipynb", "crashed", start=17.5, duration=3,
                    error={"kind": "kernel_died", "cell_index": 1, "ename": "DeadKernelError",
                           "evalue": "Kernel died", "traceback": ""}),
        step_result("examples/05_broken.ipynb", "error", start=None, duration=None, output=False,
                    error={"kind": "invalid_notebook", "ename": "NotJSONError", "evalue": "not a notebook",
                           "traceback": ""}),
        step_result("examples/scratch/wip.ipynb", "skipped", start=None, duration=None, output=False,
                    reason="work in progress"),
        step_result("readme.ipynb", "passed", start=20.5, duration=2),
    ]


def executed_notebook(path: Path, *, failing: bool = False) -> Path:
    """A tiny executed notebook: markdown, a cell with output, and (failing) papermill's error marker."""
    nb = new_notebook()
    nb.cells.append(new_markdown_cell("# Tiny notebook\nSome *text*."))
    cell = new_code_cell("x = 1\nprint(x)", execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text="1\n")]
    nb.cells.append(cell)
    if failing:
        nb.cells.append(new_markdown_cell('<span id="papermill-error-cell" style="color:red">'
                                          "Execution using papermill encountered an exception here</span>"))
        bad = new_code_cell("raise ValueError('bad')", execution_count=2)
        bad.outputs = [new_output("error", ename="ValueError", evalue="bad",
                                  traceback=["\x1b[0;31mValueError\x1b[0m: bad"])]
        nb.cells.append(bad)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def write_run(run_dir: Path, steps: list[dict[str, Any]], *, notebooks: bool = True, files: bool = True,
              **fields: Any) -> Path:
    """Write a finished run folder without running anything (docs/architecture.md#run-folder): results.json and,
    unless files=False (a run of a thousand steps, a history import), per step result.json, kernel.log and the
    executed notebook. `fields` override results.json's; the status is the run's from its steps by default."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for step in steps if files else []:
        folder = run_dir / "steps" / str(step.get("step", "unknown"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(step), encoding="utf-8")
        (folder / "kernel.log").write_text("kernel log\n", encoding="utf-8")
        if notebooks and step.get("output_notebook"):
            executed_notebook(folder / step["output_notebook"], failing=step.get("status") != "passed")
    not_passed = {"failed", "timed_out", "crashed", "error"}
    results: dict[str, Any] = {
        "schema": 1, "run_id": "20261126-100000-abc123", "backend": "local", "experiment": "demo-notebooks",
        "status": "failed" if any(s.get("status") in not_passed for s in steps) else "passed",
        "started_at": iso(0), "finished_at": iso(25), "counts": count_statuses(StepResult.from_json(s) for s in steps),
        "steps": steps,
    }
    results.update(fields)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return run_dir


class Element:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs, self.text = tag, attrs, ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class Page(HTMLParser):
    """Every element with its attributes and the text inside it (enough to assert on our own markup)."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.elements.append(element)
        if tag not in self.VOID:
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def by_id(self, element_id: str) -> Element:
        [element] = [e for e in self.elements if e.attrs.get("id") == element_id]
        return element

    def by_class(self, name: str) -> list[Element]:
        return [e for e in self.elements if name in e.classes]


def squash(text: str) -> str:
    return " ".join(text.split())
