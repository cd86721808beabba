"""Reading a notebook's own settings (metadata.orchestrator) quickly.

Plans cover hundreds of notebooks, so this parses the JSON once with the standard library and looks only at
the metadata: no nbformat validation, no upgrade of old formats. A notebook that cannot be read is not a
plan problem: the step reports it as `error` / `invalid_notebook` when it runs (docs/architecture.md#step-contract).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METADATA_KEY = "orchestrator"


def read_settings(path: Path) -> tuple[Any, str | None]:
    """(metadata.orchestrator as written, or None when absent; a warning when the file cannot be read)."""
    try:
        with path.open("rb") as handle:
            notebook = json.load(handle)
    # ValueError covers JSONDecodeError and UnicodeDecodeError; RecursionError a file nested too deep for the
    # parser (1,000 levels), which must not stop the rest of the repository from being planned.
    except (OSError, ValueError, RecursionError) as error:
        return None, f"cannot read its metadata ({type(error).__name__}: {error}); the step will report it"
    metadata = notebook.get("metadata") if isinstance(notebook, dict) else None
    if not isinstance(metadata, dict):
        return None, None
    return metadata.get(METADATA_KEY), None
