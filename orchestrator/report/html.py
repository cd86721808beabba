"""report.html: one self-contained page (inline CSS, JS and bars; nothing fetched) for a run folder.

Everything that comes from results.json goes through jinja2's autoescape: notebook names, tracebacks and
metric names are text written by notebooks, never markup.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Mapping
from urllib.parse import quote

import jinja2

from markupsafe import Markup

from orchestrator.history.sparkline import sparkline
from orchestrator.history.trends import NotebookTrend, Series
from orchestrator.report.files import executed_notebook, template_cache, write_atomic
from orchestrator.results import RunResults
from steps.step_result import StepResult
from orchestrator.text import show_duration, show_value, truncate_middle, truncate_tail
from orchestrator.report.timeline import Row, build_timeline, offset_label

log = logging.getLogger("orchestrator.report")

# Per step, in the page: 300 failing notebooks with runaway tracebacks must still open in a browser.
TRACEBACK_LIMIT = 20_000
OUTPUT_LIMIT = 4_000
# Statuses in the order the summary shows them; "running" only appears in reports built mid-run.
SUMMARY_ORDER = ("passed", "failed", "timed_out", "crashed", "error", "skipped")
# Where papermill's error marker sits in an executed notebook; links to failed notebooks jump there.
ERROR_ANCHOR = "#papermill-error-cell"


@dataclass(frozen=True)
class StepLinks:
    ipynb: str | None
    html: str | None


REPORT_TEMPLATE = "report.html.j2"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        bytecode_cache=template_cache(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in the template fails the tests, not the page
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = show_duration
    env.filters["value"] = show_value
    env.filters["offset"] = offset_label
    env.filters["utc"] = _show_time
    env.filters["status_label"] = lambda status: str(status).replace("_", " ")
    return env


def write_html(run: RunResults, run_dir: Path, path: Path, *, now: datetime | None = None,
               trends: Mapping[str, NotebookTrend] | None = None) -> None:
    """Write report.html for a (possibly partial) run record, atomically.

    Links to step files are relative to `path` and appear only for files that exist in `run_dir`.
    `trends`: notebook path -> its trend over the run history (orchestrator.history.trends).
    """
    now = now or datetime.now(timezone.utc)
    timeline = build_timeline(run, now)
    links = {step.id: _links(step, run_dir, path.parent) for step in run.steps}
    summary = [(status, run.counts.get(status, 0)) for status in SUMMARY_ORDER]
    summary += [(status, n) for status, n in run.counts.items() if status not in SUMMARY_ORDER and n]
    page = environment().get_template(REPORT_TEMPLATE).render(
        run=run,
        summary=summary,
        timeline=timeline,
        rows=timeline.rows,
        links=links,
        error_anchor=ERROR_ANCHOR,
        generated_at=now,
        traceback_text=_traceback_text,
        output_text=lambda step: truncate_tail(step.output_tail, OUTPUT_LIMIT),
        bar_title=_bar_title,
        metric_rows=_metric_rows,
        wall_s=run.wall_s if run.wall_s is not None else _elapsed(run, now),
        trends=dict(trends or {}),
        spark=_spark,
        change=_change,
    )
    write_atomic(path, page.encode("utf-8"))
    log.debug("html written path=%s steps=%d", path, len(run.steps))


def _links(step: StepResult, run_dir: Path, page_dir: Path) -> StepLinks:
    ipynb = executed_notebook(run_dir, step.id, step.output_notebook)
    if ipynb is None:
        return StepLinks(None, None)
    html = ipynb.with_suffix(".html")
    return StepLinks(
        _relative_url(ipynb, page_dir) if ipynb.is_file() else None,
        _relative_url(html, page_dir) if html.is_file() else None,
    )


def _relative_url(target: Path, page_dir: Path) -> str:
    relative = PurePosixPath(Path(os.path.relpath(target.resolve(), page_dir.resolve())).as_posix())
    # Notebook names may hold spaces, '#' or '?'; each segment is percent-encoded, the slashes kept.
    return "/".join(quote(part) for part in relative.parts)


def _traceback_text(step: StepResult) -> str:
    if step.error is None:
        return ""
    return truncate_middle(step.error.traceback, TRACEBACK_LIMIT, "the executed notebook")


def _metric_rows(step: StepResult) -> list[dict[str, Any]]:
    """One row per metric: its value, and the rule it was held to if any (expectations first)."""
    rows: list[dict[str, Any]] = []
    for e in step.expectations:
        actual = e.actual if e.actual is not None else step.metrics.get(e.metric)
        rows.append({"metric": e.metric, "actual": actual, "rule": e.rule, "ok": e.ok,
                     "missing": actual is None})
    checked = {e.metric for e in step.expectations}
    rows += [{"metric": name, "actual": value, "rule": "", "ok": None, "missing": False}
             for name, value in step.metrics.items() if name not in checked]
    return rows


def _spark(series: Series | None, title: str) -> Markup:
    # Only numbers go into the SVG; sparkline escapes the title.
    return Markup(sparkline(series.values, title=title)) if series is not None else Markup("")


def _change(series: Series | None, *, seconds: bool = False) -> str:
    """'+0.012 vs baseline', '-3.1s vs baseline', or '' without a baseline."""
    if series is None or series.change is None:
        return ""
    delta = series.change
    sign = "+" if delta >= 0 else "\u2212"
    shown = show_duration(abs(delta)) if seconds else f"{abs(delta):.4g}"
    return f"{sign}{shown} vs baseline"


def _bar_title(row: Row) -> str:
    step, bar = row.step, row.bar
    if bar is None:
        return f"{step.notebook}: {row.note}"
    span = f"{offset_label(bar.start_s)} \u2192 {offset_label(bar.end_s) if not bar.open else 'still running'}"
    return f"{step.notebook}: {step.status.replace('_', ' ')}, {show_duration(bar.end_s - bar.start_s)} ({span})"


def _elapsed(run: RunResults, now: datetime) -> float | None:
    if run.started is None or run.status != "running":
        return None
    return max(0.0, (now - run.started).total_seconds())


def _show_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "\u2014"
