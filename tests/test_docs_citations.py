"""Every citation of a document in code, help texts and tests names a file in docs/ and a heading in it
(the syntax is in docs/architecture.md#citing-these-documents), and nothing cites a document that is not in
the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["orchestrator", "steps", "tests", "functionapp", "bench", "docs", "README.md", "Makefile",
           "azure-pipelines.yml"]
SUFFIXES = {".py", ".md", ".j2", ".yml", ".yaml", ".txt", ".json", ".toml", ".Dockerfile", ""}
# A citation, not a path literal: a quote just before `docs/` is a file a test creates, e.g. "docs/guide.md".
CITATION = re.compile(r"""(?<![\w/.\-"'])docs/([A-Za-z0-9_-]+\.md)(?:#([A-Za-z0-9_-]+))?""")
# Inside docs/, documents link to each other as markdown: [text](file.md#anchor).
LINK = re.compile(r"\]\(([A-Za-z0-9_-]+\.md)?(?:#([A-Za-z0-9_-]+))?\)")
# Documents that were never part of the repository: the original design notes and their reference files.
OUTSIDE = re.compile(r"\bDESIGN(?:\.md)?(?: section)? \d|shared/(?:DESIGN|reference)|(?<![\w/])reference/\w+\.md|(?<![\w/])(?:aml|peers|style)\.md[ ,]"
                     r"|(?<![\w/])devops\.md,? (?:section )?\d|\bhabits? \d+\b")


def _files() -> list[Path]:
    """Every file of the repository that git tracks or would track (examples, environments, the Dockerfile:
    a citation anywhere counts); the listed folders where this is not a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return _listed_folders()
    return [ROOT / name for name in listed if (ROOT / name).is_file() and Path(name).suffix in SUFFIXES
            and Path(name).parts[0] != "data" and "data" not in Path(name).parts[1:2]]


def _listed_folders() -> list[Path]:
    found: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += [p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                      and "__pycache__" not in p.parts and "data" not in p.relative_to(ROOT).parts[1:2]]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    names: set[str] = set()
    in_code = False
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            names.add(slug(line.lstrip("#")))
    return names


def test_slug_follows_github() -> None:
    assert slug("## Timeouts, token lifetime, cancellation".lstrip("#")) == "timeouts-token-lifetime-cancellation"
    assert slug("Learning each step's outcome") == "learning-each-steps-outcome"
    assert slug("`on_finalize`") == "on_finalize"


def test_every_cited_docs_section_exists() -> None:
    wrong = []
    cache: dict[Path, set[str]] = {}
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        in_docs = path.parent == ROOT / "docs"
        for number, line in enumerate(text.splitlines(), 1):
            for match in [*CITATION.finditer(line), *(LINK.finditer(line) if in_docs else [])]:
                document = ROOT / "docs" / match.group(1) if match.group(1) else path  # ](#anchor): this file
                where = f"{path.relative_to(ROOT)}:{number}: {match.group(0)}"
                if not document.is_file():
                    wrong.append(f"{where}: no such file")
                elif match.group(2) is not None:
                    names = cache.setdefault(document, anchors(document))
                    if match.group(2) not in names:
                        wrong.append(f"{where}: no such heading")
    assert wrong == [], "\n".join(wrong)


def test_nothing_cites_a_document_outside_the_repository() -> None:
    wrong = []
    for path in _files():
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                wrong.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize("text", ["see DESIGN 7", "Format: DESIGN.md section 3.", "in ../shared/reference/devops.md", "(reference/devops.md 2.3)", "aml.md 1.8, 2.1", "habit 6"])
def test_outside_citations_are_recognised(text: str) -> None:
    assert OUTSIDE.search(text)
