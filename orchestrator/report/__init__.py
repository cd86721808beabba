"""The run's reports: junit.xml for CI, report.html for people, and each executed notebook as HTML.

build_report runs at the end of every run, and may run mid-run or after a crash on whatever
results.json holds then: partial data (missing keys, null times, missing notebooks) never makes it fail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.abandoned import settle_if_abandoned, with_pending_steps
from orchestrator.report import notebook_html
from orchestrator.report.files import executed_notebook
from orchestrator.report.html import REPORT_TEMPLATE, environment, write_html
from orchestrator.report.junit import write_junit
from orchestrator.report.notebook_html import RenderJob, needs_render, render_notebook_html
from orchestrator.results import RunResults, load_results
from steps.step_result import StepResult

__all__ = ["ReportFiles", "build_report", "render_notebook_html", "render_step_page", "warm_up", "write_html",
           "write_junit"]

log = logging.getLogger("orchestrator.report")

JUNIT_FILE = "junit.xml"
HTML_FILE = "report.html"


@dataclass(frozen=True)
class ReportFiles:
    junit: Path
    html: Path
    notebooks: dict[str, Path] = field(default_factory=dict)  # step id -> rendered notebook page


def build_report(run_dir: Path, *, render_notebooks: bool = True, workers: int | None = None) -> ReportFiles:
    """Read RUN_DIR/results.json; write junit.xml, report.html and steps/<id>/<notebook>.html.

    Raises InvalidInputError (from load_results) only when RUN_DIR holds no readable results.json. A run left
    "running" by a process that is gone is settled first (orchestrator/abandoned.py).
    workers: processes rendering notebooks (default: CPU count, at most 8; small runs render inline).
    Notebooks are rendered only when their page is missing or older than the .ipynb, so rebuilding the
    report as steps finish costs one render per new notebook.
    """
    started = time.monotonic()
    # A run whose process is gone is settled first: no report ever shows a dead run as still going.
    settle_if_abandoned(run_dir, by="report")
    results = with_pending_steps(run_dir, load_results(run_dir))
    junit_path, html_path = run_dir / JUNIT_FILE, run_dir / HTML_FILE
    # junit.xml first: it is what CI waits for, and it does not depend on the rendered pages.
    write_junit(results, junit_path)

    pages: dict[str, Path] = {}
    if render_notebooks:
        pages = _render_pages(run_dir, results, workers)
    write_html(results, run_dir, html_path, trends=_trends(results))
    log.info("report built run_dir=%s notebook_pages=%d secs=%.2f", run_dir, len(pages), time.monotonic() - started)
    return ReportFiles(junit=junit_path, html=html_path, notebooks=pages)


def _trends(results: RunResults) -> dict[str, Any]:
    """Per notebook, its trend over the run history; none when the history cannot be read (the report of a
    run never fails because of its history)."""
    from orchestrator.history.trends import notebook_trends

    try:
        return dict(notebook_trends(results))
    except Exception as error:  # noqa: BLE001 - see the docstring
        log.warning("run history not shown in the report (%s)", error)
        return {}


def _render_pages(run_dir: Path, results: RunResults, workers: int | None) -> dict[str, Path]:
    """Render what is new; return every step's page that exists afterwards."""
    pages: dict[str, Path] = {}
    jobs: dict[str, RenderJob] = {}
    for step in results.steps:
        job = _render_job(run_dir, step.id, step.output_notebook)
        if job is None:
            continue
        if needs_render(job.ipynb, job.html):
            jobs[step.id] = job
        elif job.html.is_file():
            pages[step.id] = job.html
    if jobs:
        started = time.monotonic()
        rendered = notebook_html.render_notebooks(list(jobs.values()), workers=workers)
        log.info("notebooks rendered count=%d secs=%.2f", len(jobs), time.monotonic() - started)
        pages.update({step_id: page for step_id, job in jobs.items() if (page := rendered.get(job.ipynb))})
    return pages


def _render_job(run_dir: Path, step_id: str, output_notebook: str | None) -> RenderJob | None:
    ipynb = executed_notebook(run_dir, step_id, output_notebook)
    if ipynb is None:
        return None
    return RenderJob(ipynb, ipynb.with_suffix(".html"), back_link=f"../../{HTML_FILE}#step-{step_id}")


def warm_up() -> None:
    """Build what the run's pages and its report reuse, ahead of them: the local backend calls this on its render
    thread as the run starts. nbconvert's set-up (notebook_html.warm_up), and report.html's template, whose
    compilation (~35 ms) the end of every run otherwise waited for."""
    notebook_html.warm_up()
    environment().get_template(REPORT_TEMPLATE)


def render_step_page(run_dir: Path, result: StepResult) -> Path | None:
    """Render one finished step's executed notebook now (the local backend calls this as each step ends,
    so the pages are made while other notebooks run and the final build_report has none left to render)."""
    job = _render_job(run_dir, result.step, result.output_notebook)
    if job is None or not needs_render(job.ipynb, job.html):
        return None
    return render_notebook_html(job.ipynb, job.html, back_link=job.back_link)
