"""nbconvert's HTMLExporter, with two costs of every run's notebook pages taken out and the pages unchanged in
what a browser shows (orchestrator/report/notebook_html.py renders with it):

- The IPython lexers come from ipython_pygments_lexers, where IPython 9 keeps them. nbconvert imports them
  through IPython.lib.lexers, which imports all of IPython first: 0.18 CPU-s in a process that needs none of it.
- nbconvert parses every page it has written with BeautifulSoup, to give images without alt text a placeholder
  and, in its "lab" markup, cells a tabindex, then writes the page out again: about a third of each page's
  conversion, and, at the first entity in a page, 0.07 CPU-s more to build BeautifulSoup's entity table. Here the
  page is parsed only when it holds an image or that markup (`<img`, `jp-Notebook`), with nbconvert's own steps.

Measured on a 40-notebook run (docs/step-runner.md, "Measured"). With an nbconvert whose HTMLExporter no longer
has the pieces used here, conversion falls back to nbconvert's own.
"""

from __future__ import annotations

from html import escape
from typing import Any

from nbconvert import HTMLExporter
from nbconvert.exporters.templateexporter import TemplateExporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

try:
    import ipython_pygments_lexers
except ImportError:  # IPython before 9 keeps them itself: nbconvert's import of IPython.lib.lexers finds them
    ipython_pygments_lexers = None

_IPYTHON_LEXERS = ({"ipython3": "IPython3Lexer", "ipython2": "IPythonLexer"}
                   if ipython_pygments_lexers is not None else {})
_SOUP_NEEDED = ("<img", "jp-Notebook")  # what nbconvert's BeautifulSoup pass changes: images, lab markup


class _Highlight(Highlight2HTML):
    """nbconvert's highlighter; for the IPython lexers, the same classes, from where they live."""

    def __call__(self, source: str, language: str | None = None, metadata: Any = None) -> str:
        language = language or self.pygments_lexer
        lexer_name = _IPYTHON_LEXERS.get(language or "")
        if lexer_name is None or (metadata and "magics_language" in metadata):
            result: str = super().__call__(source, language, metadata)  # type: ignore[no-untyped-call]
            return result
        from pygments import highlight
        from pygments.formatters import HtmlFormatter

        lexer = getattr(ipython_pygments_lexers, lexer_name)()
        formatter = HtmlFormatter(cssclass=escape(f" highlight hl-{language}"), **self.extra_formatter_options)
        html: str = highlight(source if len(source) > 0 else " ", lexer, formatter)
        return html


class PageExporter(HTMLExporter):
    """HTMLExporter.from_notebook_node, step for step, with the two changes the module docstring gives."""

    # Typed as nbconvert's HTMLExporter types it (it returns the page, not a notebook, unlike Exporter's).
    def from_notebook_node(  # type: ignore[override]
            self, nb: Any, resources: dict[str, Any] | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        if not hasattr(self, "_nb_metadata") or not hasattr(self, "_init_resources"):
            return super().from_notebook_node(nb, resources, **kw)
        langinfo = nb.metadata.get("language_info", {})
        lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
        # nbconvert's library is untyped here: these are its own calls, in its order.
        highlight_code = self.filters.get(
            "highlight_code", _Highlight(pygments_lexer=lexer, parent=self))  # type: ignore[no-untyped-call]
        resources = self._init_resources(resources)  # type: ignore[no-untyped-call]
        filter_data_type = WidgetsDataTypeFilter(  # type: ignore[no-untyped-call]
            notebook_metadata=self._nb_metadata, parent=self, resources=resources)
        self.register_filter("highlight_code", highlight_code)  # type: ignore[no-untyped-call]
        self.register_filter("filter_data_type", filter_data_type)  # type: ignore[no-untyped-call]
        html: str
        html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
        if any(marker in html for marker in _SOUP_NEEDED):
            html = _accessible(self, html)
        return html, resources


def _accessible(exporter: Any, html: str) -> str:
    """nbconvert's pass after the template (HTMLExporter.from_notebook_node, nbconvert 7)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, features="html.parser")
    missing_alt = 0
    for elem in soup.select("img:not([alt])"):
        elem.attrs["alt"] = "No description has been provided for this image"
        missing_alt += 1
    if missing_alt:
        exporter.log.warning("Alternative text is missing on %s image(s).", missing_alt)
    for elem in soup.select(".jp-Notebook div.jp-Cell-inputWrapper"):
        elem.attrs["tabindex"] = "0"
    for elem in soup.select(".jp-Notebook div.jp-OutputArea-output"):
        elem.attrs["tabindex"] = "0"
    return str(soup)
