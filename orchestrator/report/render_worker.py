"""Worker process for rendering notebooks in parallel: `python -m orchestrator.report.render_worker JOBS REPLIES`.

A module of its own so that running it does not import notebook_html twice (once as __main__).
"""

from __future__ import annotations

import sys
from pathlib import Path

from orchestrator.report.notebook_html import render_job_file

if __name__ == "__main__":
    render_job_file(Path(sys.argv[1]), Path(sys.argv[2]))
