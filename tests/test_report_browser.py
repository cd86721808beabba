"""report.html in a real headless Chromium: what a person sees, and that the page fetches nothing.

Needs the `chromium` binary (Debian package `chromium`). Without it the tests skip, unless
ORCHESTRATOR_REQUIRE_BROWSER=1 (CI sets it), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.report import build_report
from tests.report_builders import Page, every_status, squash, write_run

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Flags that keep a headless browser quiet and reproducible on CI machines (no sandbox in containers,
# no GPU, no first-run or sync traffic).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Loads a page in an iframe, then writes what that page requested (Resource Timing: scripts, styles,
# images, fonts, fetches) into its own DOM, which --dump-dom prints. Reading the iframe needs
# --allow-file-access-from-files: without it every file:// page is its own origin.
HARNESS = """<!DOCTYPE html><html><body>
<iframe id="control" src="control.html"></iframe><iframe id="report" src="%s"></iframe>
<pre id="out">pending</pre>
<script>
var frames = ["control", "report"], seen = {};
frames.forEach(function (id) {
  document.getElementById(id).addEventListener("load", function () {
    var w = this.contentWindow;
    seen[id] = {resources: w.performance.getEntriesByType("resource").map(function (e) { return e.name; }),
                bars: w.document.querySelectorAll(".tl-bar").length};
    document.getElementById("out").textContent = JSON.stringify(seen);
  });
});
</script></body></html>"""
# Positive control: proves the harness sees requests, so an empty list for the report means something.
CONTROL = '<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>'


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("ORCHESTRATOR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"no headless browser found (looked for {', '.join(BROWSERS)}); install the chromium package")
    pytest.skip("chromium is not installed")


def dump_dom(browser: str, page: Path, profile: Path, *extra: str) -> str:
    result = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *extra, "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = write_run(tmp_path_factory.mktemp("browser") / "run", every_status())
    build_report(run_dir)
    return run_dir


def test_rendered_page_shows_summary_table_and_timeline(chromium: str, run_dir: Path, tmp_path: Path) -> None:
    dom = Page(dump_dom(chromium, run_dir / "report.html", tmp_path / "profile"))
    # The page's script ran (no syntax error): it marks the document when the status filter is wired.
    [html] = [e for e in dom.elements if e.tag == "html"]
    assert html.attrs.get("data-filter") == "ready"
    counts = {e.attrs["data-status"]: squash(e.text) for e in dom.by_class("count")}
    assert counts == {"passed": "2 passed", "failed": "2 failed", "timed_out": "1 timed out", "crashed": "1 crashed",
                      "error": "1 error", "skipped": "1 skipped", "": "8 notebooks"}
    bars = dom.by_class("tl-bar")
    started = [s["step"] for s in every_status() if s["started_at"] is not None]
    assert sorted(b.attrs["data-step"] for b in bars) == sorted(started)  # one bar per step that ran
    assert all(re.search(r"left: [\d.]+%; width: [\d.]+%", b.attrs["style"]) for b in bars)
    assert len([e for e in dom.elements if e.tag == "tr" and "step" in e.classes]) == len(every_status())
    assert squash(dom.by_id("overall-status").text) == "failed"


def test_page_makes_no_network_requests(chromium: str, run_dir: Path, tmp_path: Path) -> None:
    (run_dir.parent / "control.html").write_text(CONTROL, encoding="utf-8")
    harness = run_dir.parent / "harness.html"
    harness.write_text(HARNESS % "run/report.html", encoding="utf-8")
    dom = Page(dump_dom(chromium, harness, tmp_path / "profile", "--allow-file-access-from-files"))
    seen = json.loads(dom.by_id("out").text)
    assert seen["control"]["resources"] == ["http://example.invalid/x.png"]  # the harness does see requests
    assert seen["report"]["bars"] == 6  # and it did read the report
    assert seen["report"]["resources"] == []


def test_a_rendered_notebook_page_is_readable_offline_too(chromium: str, run_dir: Path, tmp_path: Path) -> None:
    page = run_dir / "steps" / "examples_models_01_train" / "01_train.html"
    dom = Page(dump_dom(chromium, page, tmp_path / "profile"))
    assert dom.by_id("papermill-error-cell")
    assert any(e.attrs.get("href", "").startswith("../../report.html#step-") for e in dom.elements)
    for element in dom.elements:
        assert not re.match(r"^(https?:)?//", element.attrs.get("src", "")), element.attrs
