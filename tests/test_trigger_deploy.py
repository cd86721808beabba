"""The deployment files stay true to the repository: the worker container's Dockerfile copies folders that
exist (and that .dockerignore lets through), installs extras pyproject.toml declares, installs no git (the
fetch needs none), and starts a command the CLI has."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_the_worker_dockerfile_builds_from_what_the_repository_has() -> None:
    text = (ROOT / "worker.Dockerfile").read_text(encoding="utf-8")
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    sources = [part for line in instructions if line.startswith("COPY ") for part in line.split()[1:-1]]
    assert sources and all((ROOT / source).exists() for source in sources), sources
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    assert all(f"!{source.rstrip('/')}" in ignored for source in sources), "a COPY source is kept out by .dockerignore"
    extras = set(re.search(r"\.\[([a-z,]+)\]", text).group(1).split(","))  # type: ignore[union-attr]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert extras <= set(declared) and "trigger" in extras
    assert any(requirement.startswith("dulwich") for requirement in declared["trigger"])
    assert not re.search(r"\bgit\b", " ".join(line for line in instructions if line.startswith("RUN ")))
    entry = re.search(r'ENTRYPOINT \["orchestrator", "([a-z-]+)"\]', text)
    assert entry is not None and entry.group(1) == "worker"
    assert CliRunner().invoke(cli, ["worker", "--help"]).exit_code == 0
