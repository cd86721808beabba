"""Executed notebooks rendered to HTML, so the report links to something a browser shows.

nbconvert's "lab" and "classic" templates inline about 300 KB of CSS into every page and pull require.js,
MathJax and mermaid from a CDN; for 300 notebooks that is 90 MB of repeated CSS and pages that need the
network. We render with the "basic" template (cells only, same markup as "classic") and wrap it in a small
page with our own few KB of CSS. Converting costs about the same either way (mostly pygments and
markdown: ~0.1 s for a 50 KB notebook), so many notebooks are rendered by several worker processes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.report.files import template_cache, write_atomic

log = logging.getLogger("orchestrator.report")

# Below this many notebooks, starting worker processes (each imports nbconvert: ~1 s) costs more than
# it saves at ~0.1 s per notebook.
POOL_THRESHOLD = 12
MAX_WORKERS = 8


@dataclass(frozen=True)
class RenderJob:
    ipynb: Path
    html: Path
    back_link: str | None = None  # relative link to the report, shown at the top of the page


def needs_render(ipynb: Path, html: Path) -> bool:
    """The report is rebuilt as steps finish; a page newer than its notebook is still right."""
    try:
        return html.stat().st_mtime < ipynb.stat().st_mtime
    except FileNotFoundError:
        return ipynb.exists()


def render_notebook_html(ipynb: Path, html: Path, *, back_link: str | None = None) -> Path | None:
    """Render one executed notebook to a self-contained HTML page; None (logged) if it cannot be."""
    error = _render(ipynb, html, back_link)
    if error is not None:
        log.warning("notebook not rendered path=%s reason=%s", ipynb, error)
        return None
    return html


def render_notebooks(jobs: Sequence[RenderJob], *, workers: int | None = None) -> dict[Path, Path | None]:
    """Render many notebooks, in parallel when there are enough to pay for the workers.

    Returns {ipynb: html or None}. Never raises for a notebook that cannot be rendered.
    """
    done: dict[Path, Path | None] = {}
    if workers is None:
        workers = min(MAX_WORKERS, os.cpu_count() or 1)
    workers = max(1, min(workers, len(jobs)))
    if workers > 1 and len(jobs) >= POOL_THRESHOLD:
        done = _render_in_workers(jobs, workers)
    for job in jobs:  # the serial path, and whatever a failed worker left undone
        if job.ipynb not in done:
            done[job.ipynb] = render_notebook_html(job.ipynb, job.html, back_link=job.back_link)
    return done


def _render_in_workers(jobs: Sequence[RenderJob], workers: int) -> dict[Path, Path | None]:
    """Split the jobs over `workers` child interpreters running orchestrator.report.render_worker.

    Not multiprocessing: "fork" is unsafe in a process with live threads (the report may be built from the
    local backend, or at Ctrl-C), and "spawn"/"forkserver" re-import the caller's __main__ in every child,
    so a script that calls build_report without an `if __name__ == "__main__"` guard would run again in
    each worker. A child started with `python -m` runs nothing but the rendering. Jobs and replies go
    through files, so no pipe can fill up and stall a child.
    """
    done: dict[Path, Path | None] = {}
    by_ipynb = {str(job.ipynb): job for job in jobs}
    package_root = str(Path(__file__).resolve().parents[2])  # so a source checkout works as well as an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="orchestrator-render-") as scratch:
        children: list[tuple[subprocess.Popen[bytes], Path]] = []
        try:
            for index in range(workers):
                share = [{"ipynb": str(j.ipynb), "html": str(j.html), "back_link": j.back_link}
                         for j in jobs[index::workers]]
                todo, replies = Path(scratch, f"jobs-{index}.json"), Path(scratch, f"replies-{index}.jsonl")
                todo.write_text(json.dumps(share), encoding="utf-8")
                command = [sys.executable, "-m", "orchestrator.report.render_worker", str(todo), str(replies)]
                children.append((subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL), replies))
            for child, replies in children:
                child.wait()
                # A worker that died part-way still leaves the replies it wrote; the rest go serial.
                text = replies.read_text(encoding="utf-8") if replies.exists() else ""
                for line in text.splitlines():
                    reply = json.loads(line)
                    job = by_ipynb[reply["ipynb"]]
                    if reply["error"] is not None:
                        log.warning("notebook not rendered path=%s reason=%s", job.ipynb, reply["error"])
                    done[job.ipynb] = job.html if reply["error"] is None else None
        except (OSError, ValueError, KeyError) as exc:  # no interpreter to start, a garbled reply: go serial
            log.warning("render workers failed, rendering the rest serially: %s", exc)
        finally:
            for child, _ in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return done


def render_job_file(todo: Path, replies: Path) -> None:
    """The worker's side: render each job listed in `todo`, appending one JSON reply per line."""
    with replies.open("a", encoding="utf-8") as out:
        for job in json.loads(todo.read_text(encoding="utf-8")):
            error = _render(Path(job["ipynb"]), Path(job["html"]), job.get("back_link"))
            out.write(json.dumps({"ipynb": job["ipynb"], "error": error}) + "\n")
            out.flush()


def _render(ipynb: Path, html: Path, back_link: str | None) -> str | None:
    """Returns None on success, else why it failed (a string: it crosses a process boundary)."""
    import nbformat

    try:
        nb = nbformat.read(str(ipynb), as_version=4)  # type: ignore[no-untyped-call]  # nbformat: no hints
        with warnings.catch_warnings():
            # Metric outputs (scrapbook, store_metadata) have no visible form; nbconvert warns per output.
            warnings.filterwarnings("ignore", message="Your element with mimetype", category=UserWarning)
            body, _ = _exporter().from_notebook_node(nb)
        page = _page_template().render(title=ipynb.name, body=body, back_link=back_link,
                                       highlight_css=_highlight_css())
        write_atomic(html, page.encode("utf-8"))
    except Exception as exc:  # nbformat/nbconvert raise many types for broken or partial notebooks
        return f"{type(exc).__name__}: {exc}"
    return None


def warm_up() -> None:
    """Import nbconvert and build what every render reuses (~1 CPU-s), ahead of the first notebook's end: the
    local backend calls this on its render thread as the run starts, while the kernels start and run, so a short
    run does not pay it after its last notebook. That includes one conversion of a small notebook: the first
    conversion compiles the templates and sets up the markdown parser and the Python lexer (~0.45 CPU-s measured,
    on top of the imports), which a one-notebook run would otherwise wait for after its notebook ended."""
    import nbformat

    outputs = [{"output_type": "execute_result", "data": {"text/plain": "1"}, "metadata": {}, "execution_count": 1},
               {"output_type": "stream", "name": "stdout", "text": "ok\n"},
               {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []}]
    nb = nbformat.from_dict({  # type: ignore[no-untyped-call]  # nbformat: no hints
        "nbformat": 4, "nbformat_minor": 5, "cells": [
            {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# title\n*text*"},
            {"cell_type": "code", "id": "c", "metadata": {}, "source": "x = 1\nx", "execution_count": 1,
             "outputs": outputs}],
        "metadata": {"language_info": {"name": "python", "pygments_lexer": "ipython3",
                                       "codemirror_mode": {"name": "ipython", "version": 3}}}})
    _exporter().from_notebook_node(nb)
    _page_template()
    _highlight_css()


@functools.lru_cache(maxsize=1)
def _exporter() -> Any:
    # Built once per process: the first conversion compiles the templates (~0.2 s), later ones reuse them.
    from orchestrator.report._page_exporter import PageExporter

    # nbconvert warns once per notebook about images without alt text (every matplotlib plot): noise in
    # a run's log, so its messages go to a child logger that lets only errors through.
    quiet = logging.getLogger("orchestrator.report.nbconvert")
    quiet.setLevel(logging.ERROR)
    # optimistic_validation: the notebook is checked against the schema once, after nbconvert's preprocessors, not
    # after each of them (13 times a page: a fifth of its conversion); the page is the same.
    exporter = PageExporter(template_name="basic", log=quiet,  # type: ignore[no-untyped-call]  # traitlets class
                            optimistic_validation=True)
    exporter.environment.bytecode_cache = template_cache()  # compiled templates kept between runs (files.py)
    return exporter


@functools.lru_cache(maxsize=1)
def _highlight_css() -> str:
    from pygments.formatters import HtmlFormatter

    css: str = HtmlFormatter(style="default").get_style_defs(".highlight")
    return css


@functools.lru_cache(maxsize=1)
def _page_template() -> Any:
    from orchestrator.report.html import environment

    return environment().get_template("notebook.html.j2")

