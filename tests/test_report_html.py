"""report.html, the notebooks' HTML pages and build_report, read back with the standard library's parser."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InvalidInputError
from orchestrator.report import build_report, render_notebook_html, write_html
from orchestrator.report import notebook_html
from orchestrator.results import RunResults
from steps.step_result import parse_time
from orchestrator.report.notebook_html import RenderJob, render_notebooks
from orchestrator.report.timeline import build_timeline
from tests.report_builders import T0, Page, every_status, executed_notebook, iso, squash, step_result, write_run


def page_of(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run", every_status())


@pytest.fixture
def report(run_dir: Path) -> Page:
    build_report(run_dir)
    return page_of(run_dir / "report.html")


def test_title_names_the_experiment_and_run(report: Page) -> None:
    [title] = [e for e in report.elements if e.tag == "title"]
    assert "demo-notebooks" in title.text and "20261126-100000-abc123" in title.text
    assert squash(report.by_id("overall-status").text) == "failed"
    assert squash(report.by_id("wall-time").text) == "25.0 s"


def test_summary_counts_every_status(report: Page) -> None:
    expected = {"passed": 2, "failed": 2, "timed_out": 1, "crashed": 1, "error": 1, "skipped": 1}
    for status, n in expected.items():
        card = report.by_id(f"count-{status}")
        assert squash(card.text).split()[0] == str(n), status
        assert f"status-{status}" in card.classes
    assert squash(report.by_id("count-total").text) == "8 notebooks"


def test_table_has_a_row_per_notebook_with_its_status(report: Page) -> None:
    rows = [e for e in report.elements if e.tag == "tr" and "step" in e.classes]
    assert [r.attrs["data-status"] for r in rows] == [
        "passed", "failed", "failed", "timed_out", "crashed", "error", "skipped", "passed"]
    train = squash(report.by_id("step-examples_models_01_train").text)
    for expected in ("01_train.ipynb", "failed", "12.5 s", "cell 7", "ValueError: bad",
                     "parameter 'lr' is not declared", "epochs=1"):
        assert expected in train
    evaluation = squash(report.by_id("step-examples_models_02_eval").text)
    assert "accuracy 0.81 >= 0.9 ✗ miss" in evaluation and "loss 0.4 <= 0.5 ✓ ok" in evaluation
    assert "work in progress" in squash(report.by_id("step-examples_scratch_wip").text)


def test_timeline_has_one_bar_per_started_notebook_placed_in_time(report: Page) -> None:
    bars = report.by_class("tl-bar")
    assert len(bars) == 6  # 8 notebooks; the one that never started and the skipped one have no bar
    train = next(b for b in bars if b.attrs["data-step"] == "examples_models_01_train")
    assert "status-failed" in train.classes
    # The axis spans 0..30 s (the timed-out notebook ran 30 s): 01_train ran from 5 s for 12.5 s.
    left, width = (float(x) for x in re.findall(r"([\d.]+)%", train.attrs["style"]))
    assert left == pytest.approx(100 * 5 / 30, abs=0.01) and width == pytest.approx(100 * 12.5 / 30, abs=0.01)
    ticks = [squash(t.text) for t in report.by_class("tl-tick")]
    assert ticks == ["0", "5s", "10s", "15s", "20s", "25s", "30s"]
    notes = [squash(n.text) for n in report.by_class("tl-note")]
    assert notes == ["did not start", "skipped"]


def test_links_to_the_rendered_notebook_and_the_ipynb(report: Page) -> None:
    hrefs = [e.attrs["href"] for e in report.elements if e.tag == "a" and "href" in e.attrs]
    assert "steps/examples_models_01_train/01_train.html#papermill-error-cell" in hrefs
    assert "steps/examples_models_01_train/01_train.ipynb" in hrefs
    assert "steps/examples_00_prepare/00_prepare.html" in hrefs
    # No executed notebook, no link.
    assert not any(h.startswith("steps/examples_05_broken/") for h in hrefs)


def test_tracebacks_are_escaped_and_collapsed(run_dir: Path, report: Page) -> None:
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(" in text
    assert len(re.findall(r"<script\b", text)) == 1  # ours, and only ours
    details = [e for e in report.elements if e.tag == "details" and "traceback" in e.classes]
    assert len(details) == 2 and "open" not in details[0].attrs
    assert "----> 2 raise ValueError('bad')" in details[0].text  # ANSI colours stripped


def test_page_is_self_contained(run_dir: Path, report: Page) -> None:
    for element in report.elements:
        for attr in ("src", "href", "action", "data"):
            value = element.attrs.get(attr, "")
            assert not re.match(r"^(https?:)?//", value), (element.tag, value)
        assert element.tag not in ("link", "img", "iframe")
    assert "@import" not in (run_dir / "report.html").read_text(encoding="utf-8")


def test_repair_run_names_the_repaired_run_and_marks_carried_results(tmp_path: Path) -> None:
    steps = every_status()
    steps[0]["carried_over_from"] = "20261125-090000-000aaa"
    steps[0]["started_at"], steps[0]["finished_at"] = iso(-86400), iso(-86395)  # ran a day earlier
    run_dir = write_run(tmp_path / "run", steps, repairs="20261125-090000-000aaa")
    build_report(run_dir)
    page = page_of(run_dir / "report.html")
    assert "20261125-090000-000aaa" in page.by_id("repair-note").text
    row = page.by_id("step-examples_00_prepare")
    assert "carried over" in squash(row.text)
    # Carried results ran in the earlier run: a note in the timeline, no bar stretching the axis a day back.
    assert "carried over from run 20261125-090000-000aaa" in [squash(n.text) for n in page.by_class("tl-note")]
    assert [squash(t.text) for t in page.by_class("tl-tick")][-1] == "30s"


def test_a_running_run_with_partial_results(tmp_path: Path) -> None:
    steps: list[Any] = [
        step_result("a.ipynb", "passed", start=0, duration=4),
        {"step": "b", "notebook": "b.ipynb", "status": "running", "started_at": iso(2), "finished_at": None},
        {"step": "c"},
        {"step": "d", "notebook": "d.ipynb", "status": "failed", "started_at": "garbage", "error": None,
         "expectations": [{"metric": "acc"}], "metrics": "nope", "warnings": "nope", "output_notebook": "d.ipynb"},
    ]
    results = {"schema": 1, "run_id": "r", "status": "running", "started_at": iso(0), "steps": steps}
    path = tmp_path / "report.html"
    write_html(RunResults.from_json(results), tmp_path, path, now=T0 + timedelta(seconds=10))
    page = page_of(path)
    assert "still going" in page.by_class("partial")[0].text
    assert squash(page.by_id("wall-time").text) == "10.0 s"
    open_bar = next(b for b in page.by_class("tl-bar") if b.attrs["data-step"] == "b")
    assert "open" in open_bar.classes  # drawn up to "now", hatched
    assert squash(page.by_id("count-error").text).startswith("1")  # the step with no status
    assert "running" in squash(page.by_id("count-running").text)


def test_nothing_started_yet(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_html(RunResults.from_json({"schema": 1, "steps": [], "status": "running", "started_at": None}), tmp_path, path)
    page = page_of(path)
    assert "No notebook has started yet." in squash(page.by_id("timeline").text)


def test_link_urls_are_encoded(tmp_path: Path) -> None:
    step = step_result("odd/name #1?.ipynb", "passed")
    run_dir = write_run(tmp_path / "run", [step])
    build_report(run_dir)
    hrefs = {e.attrs["href"] for e in page_of(run_dir / "report.html").elements if "href" in e.attrs}
    assert "steps/odd_name%20%231%3F/name%20%231%3F.ipynb" in hrefs


def test_output_notebook_outside_the_step_folder_is_ignored(tmp_path: Path) -> None:
    step = step_result("x.ipynb", "passed", output_notebook="../../../escape.ipynb")
    run_dir = write_run(tmp_path / "run", [step], notebooks=False)
    executed_notebook(tmp_path / "escape.ipynb")
    files = build_report(run_dir)
    assert files.notebooks == {} and not (tmp_path / "escape.html").exists()


def test_build_report_renders_each_executed_notebook_once(run_dir: Path) -> None:
    files = build_report(run_dir)
    assert files.junit == run_dir / "junit.xml" and files.junit.is_file()
    assert files.html == run_dir / "report.html" and files.html.is_file()
    assert set(files.notebooks) == {"examples_00_prepare", "examples_models_01_train", "examples_models_02_eval",
                                    "examples_03_slow", "examples_04_crash", "readme"}
    page = files.notebooks["examples_models_01_train"]
    assert page == run_dir / "steps" / "examples_models_01_train" / "01_train.html"
    stamp = page.stat().st_mtime_ns
    time.sleep(0.01)
    build_report(run_dir)  # rebuilt as another step finishes: the page is newer than its notebook
    assert page.stat().st_mtime_ns == stamp
    ipynb = page.with_suffix(".ipynb")
    later = page.stat().st_mtime + 5
    os.utime(ipynb, (later, later))  # the notebook changed (a repair ran it again)
    build_report(run_dir)
    assert page.stat().st_mtime_ns != stamp


def test_build_report_without_rendering(run_dir: Path) -> None:
    files = build_report(run_dir, render_notebooks=False)
    assert files.notebooks == {}
    hrefs = [e.attrs.get("href", "") for e in page_of(files.html).elements]
    assert not any(h.endswith(".html") or ".html#" in h for h in hrefs)
    assert "steps/examples_00_prepare/00_prepare.ipynb" in hrefs


def test_a_notebook_that_cannot_be_rendered_is_logged_and_left_out(run_dir: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    (run_dir / "steps" / "readme" / "readme.ipynb").write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="orchestrator.report"):
        files = build_report(run_dir)
    assert "readme" not in files.notebooks
    assert any("notebook not rendered" in r.message and "readme.ipynb" in r.message for r in caplog.records)
    hrefs = [e.attrs.get("href", "") for e in page_of(files.html).elements]
    assert "steps/readme/readme.ipynb" in hrefs and "steps/readme/readme.html" not in hrefs


def test_a_folder_without_results_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="results.json"):
        build_report(tmp_path)


def test_rendered_notebook_page(tmp_path: Path) -> None:
    ipynb = executed_notebook(tmp_path / "nb.ipynb", failing=True)
    html = render_notebook_html(ipynb, tmp_path / "nb.html", back_link="../../report.html#step-x")
    assert html == tmp_path / "nb.html"
    text = html.read_text(encoding="utf-8")
    page = Page(text)
    assert any(e.attrs.get("href") == "../../report.html#step-x" for e in page.elements)
    assert page.by_id("papermill-error-cell")  # where the report's link lands
    assert "ValueError" in text and "\x1b" not in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # no CDN: readable offline
    assert len(text) < 40_000  # the "lab" template would inline ~300 KB of CSS


def test_render_notebook_html_returns_none_for_a_missing_notebook(tmp_path: Path) -> None:
    assert render_notebook_html(tmp_path / "missing.ipynb", tmp_path / "missing.html") is None


@pytest.mark.slow
def test_many_notebooks_render_in_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = [RenderJob(executed_notebook(tmp_path / f"nb{i}.ipynb"), tmp_path / f"nb{i}.html") for i in range(12)]
    (tmp_path / "nb3.ipynb").write_text("broken", encoding="utf-8")

    def not_here(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rendered in the parent process, not in a worker")

    monkeypatch.setattr(notebook_html, "render_notebook_html", not_here)
    done = render_notebooks(jobs, workers=2)
    assert done[tmp_path / "nb3.ipynb"] is None
    assert all(done[job.ipynb] == job.html and job.html.is_file() for job in jobs if job.ipynb.name != "nb3.ipynb")


def test_workers_that_cannot_start_fall_back_to_rendering_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    jobs = [RenderJob(executed_notebook(tmp_path / f"nb{i}.ipynb"), tmp_path / f"nb{i}.html") for i in range(12)]
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.WARNING, logger="orchestrator.report"):
        done = render_notebooks(jobs, workers=2)
    assert all(done[job.ipynb] == job.html for job in jobs)
    assert any("rendering the rest serially" in r.message for r in caplog.records)


def test_a_300_notebook_report_is_whole(tmp_path: Path) -> None:
    """Every notebook and bar is there. Its speed is not asserted: a timed test fails on a loaded machine."""
    steps = []
    for i in range(300):
        status = ("passed", "failed", "timed_out", "skipped")[i % 4]
        error = {"kind": "cell_error", "cell_index": 3, "ename": "ValueError", "evalue": f"bad {i}",
                 "traceback": "frame\n" * 200}
        extra: dict[str, Any] = {"error": error} if status == "failed" else {}
        start = None if status == "skipped" else i * 2.0
        steps.append(step_result(f"group{i // 30}/nb_{i:03d}.ipynb", status, start=start, duration=30.0,
                                 metrics={"accuracy": 0.9}, **extra))
    results = {"schema": 1, "run_id": "big", "experiment": "big", "status": "failed", "started_at": iso(0),
               "finished_at": iso(700), "steps": steps}
    write_html(RunResults.from_json(results), tmp_path, tmp_path / "report.html")
    page = page_of(tmp_path / "report.html")
    assert len(page.by_class("tl-bar")) == 225
    assert len([e for e in page.elements if e.tag == "tr" and "step" in e.classes]) == 300
    assert json.loads(json.dumps(results))  # the fixture itself is plain JSON


@pytest.mark.parametrize(("span_s", "labels"), [
    (7200, ["0", "15m", "30m", "45m", "1h", "1h15m", "1h30m", "1h45m", "2h"]),
    (45, ["0", "10s", "20s", "30s", "40s"]),
    (0.2, ["0", "1s"]),
])
def test_axis_ticks_are_round_numbers(span_s: float, labels: list[str]) -> None:
    run = RunResults.from_json({"started_at": iso(0), "finished_at": iso(span_s), "status": "passed",
                    "steps": [step_result("a.ipynb", "passed", start=0, duration=span_s)]})
    assert [t.label for t in build_timeline(run, T0).ticks] == labels


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-26T10:00:00Z", "10:00:00.000000"),
    ("2026-11-26T10:00:00.5Z", "10:00:00.500000"),
    ("2026-11-26T10:00:00.123456789Z", "10:00:00.123456"),
    ("2026-11-26T11:00:00+01:00", "10:00:00.000000"),
    ("2026-11-26 10:00:00", "10:00:00.000000"),  # no offset: UTC
])
def test_times_in_the_forms_writers_use(text: str, expected: str) -> None:
    parsed = parse_time(text)
    assert parsed is not None and parsed.strftime("%H:%M:%S.%f") == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", 12, "2026-13-45T99:00:00Z"])
def test_unreadable_times_are_none(value: Any) -> None:
    assert parse_time(value) is None
