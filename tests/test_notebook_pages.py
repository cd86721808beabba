"""Notebook pages rendered by the run (orchestrator/report/_page_exporter.py): nbconvert's pages, without importing
IPython and without re-parsing a page that has nothing nbconvert's accessibility pass would change."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_output

from orchestrator.report import _page_exporter
from orchestrator.report.files import template_cache
from orchestrator.report.notebook_html import render_notebook_html
from tests.report_builders import executed_notebook

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002000154a24f5d"
    "0000000049454e44ae426082")).decode()


def _ipython3(path: Path, *, image: bool) -> Path:
    executed_notebook(path)
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.cells[1].source = "import os\n%time x = 1"
    if image:
        nb.cells[1].outputs.append(new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}))
    nbformat.write(nb, str(path))
    return path


def test_a_page_is_highlighted_with_the_ipython_lexer_and_reparsed_only_for_images(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passes: list[str] = []
    accessible = _page_exporter._accessible

    def counted(exporter: Any, html: str) -> str:
        passes.append(html)
        return accessible(exporter, html)

    monkeypatch.setattr(_page_exporter, "_accessible", counted)
    plain = render_notebook_html(_ipython3(tmp_path / "plain.ipynb", image=False), tmp_path / "plain.html")
    assert plain is not None and passes == []
    text = plain.read_text(encoding="utf-8")
    # The IPython3 lexer's classes: a keyword, and a magic IPython's lexer knows (Python's would call it an error).
    assert 'highlight hl-ipython3"' in text and '<span class="kn">import</span>' in text
    assert '<span class="o">%</span><span class="k">time</span>' in text
    with_image = render_notebook_html(_ipython3(tmp_path / "image.ipynb", image=True), tmp_path / "image.html")
    assert with_image is not None and len(passes) == 1
    assert 'alt="No description has been provided for this image"' in with_image.read_text(encoding="utf-8")


def test_rendering_a_page_does_not_import_ipython(tmp_path: Path) -> None:
    notebook = _ipython3(tmp_path / "nb.ipynb", image=False)
    code = ("import sys\nfrom pathlib import Path\nfrom orchestrator.report.notebook_html import render_notebook_html\n"
            f"assert render_notebook_html(Path({str(notebook)!r}), Path({str(tmp_path / 'nb.html')!r}))\n"
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'IPython'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_compiled_templates_are_kept_between_runs_and_give_the_same_page(tmp_path: Path) -> None:
    """jinja2's bytecode cache (orchestrator/report/files.py, template_cache), in its per-user folder under TMPDIR: the
    second process reads the templates the first compiled, and writes the same page."""
    notebook = _ipython3(tmp_path / "nb.ipynb", image=False)
    code = ("import sys\nfrom pathlib import Path\nfrom orchestrator.report.notebook_html import render_notebook_html\n"
            "assert render_notebook_html(Path(sys.argv[1]), Path(sys.argv[2]))")
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    pages = []
    for run in ("first", "second"):
        subprocess.run([sys.executable, "-c", code, str(notebook), str(tmp_path / f"{run}.html")], env=env, check=True)
        pages.append((tmp_path / f"{run}.html").read_bytes())
        cached = list((tmp_path / "tmp").glob("_jinja2-cache-*/*.cache"))
        assert cached and all(entry.stat().st_mode & 0o077 == 0 for entry in cached)
    assert pages[0] == pages[1]


def test_without_a_safe_folder_templates_are_compiled_as_before(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "missing" / "folder"))
    assert template_cache() is None
