"""The run history: one SQLite file (default `.orchestrator/history.sqlite`) holding every finished run.

One row per run and one per notebook in it. Why SQLite: two runs finishing at once (two terminals, two CI
jobs on one agent) must both land, and a reader must never see half a run. Each run is written in one
`BEGIN IMMEDIATE` transaction (the writer lock is taken up front, so two writers queue instead of failing
half way), the journal is WAL (readers do not block the writer), and a busy database is waited for
rather than reported (`timeout`). Recording the same run twice replaces it, so `history import` can be
repeated safely.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InvalidInputError, Problem

HISTORY_ENV = "ORCHESTRATOR_HISTORY"
DEFAULT_HISTORY = Path(".orchestrator") / "history.sqlite"
BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    root TEXT NOT NULL,            -- the plan folder, absolute: which project the run belongs to
    experiment TEXT NOT NULL,
    backend TEXT NOT NULL,         -- local | azureml | emulated
    status TEXT NOT NULL,          -- passed | failed | interrupted
    started_at TEXT NOT NULL,      -- UTC ISO 8601; the order runs are listed in
    finished_at TEXT,
    commit_sha TEXT,
    branch TEXT
);
CREATE TABLE IF NOT EXISTS notebook_runs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    step TEXT NOT NULL,
    notebook TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_s REAL,
    attempts INTEGER NOT NULL,
    metrics TEXT NOT NULL,         -- JSON object of the numeric metrics
    code_id TEXT,                  -- the notebook's code and parameters, hashed: "unchanged code" for flakiness
    PRIMARY KEY (run_id, step)
);
CREATE INDEX IF NOT EXISTS notebook_runs_by_notebook ON notebook_runs (notebook);
CREATE INDEX IF NOT EXISTS runs_by_root ON runs (root, started_at);
"""


@dataclass(frozen=True)
class NotebookOutcome:
    """One notebook's outcome in one run."""

    step: str
    notebook: str
    status: str
    duration_s: float | None
    attempts: int
    metrics: dict[str, float] = field(default_factory=dict)
    code_id: str | None = None


@dataclass(frozen=True)
class HistoryRun:
    """One finished run and its notebooks, as the history keeps it."""

    run_id: str
    root: str
    experiment: str
    backend: str
    status: str
    started_at: str
    finished_at: str | None
    commit: str | None
    branch: str | None
    notebooks: tuple[NotebookOutcome, ...] = ()


@dataclass(frozen=True)
class PastRun:
    """A notebook's outcome in one run, with the run's identity: one row of `orchestrator history`."""

    run_id: str
    started_at: str
    backend: str
    commit: str | None
    branch: str | None
    record: NotebookOutcome


def history_path() -> Path:
    """Where the history lives: $ORCHESTRATOR_HISTORY, else .orchestrator/history.sqlite here."""
    configured = os.environ.get(HISTORY_ENV, "").strip()
    return Path(configured) if configured else DEFAULT_HISTORY


def _prepare(connection: sqlite3.Connection) -> None:
    """Switch to WAL and create the schema. Changing the journal mode does not wait on the busy timeout, so two
    processes creating the file at once retry here instead of failing with "database is locked"."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL never corrupts the file; a power cut may lose the last run, not more.
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class HistoryStore:
    """The history file. Each method opens its own connection, so a store can be shared across threads."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else history_path()

    @contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise FileNotFoundError(self.path)
        try:
            # isolation_level=None: transactions are begun explicitly below, not by the sqlite3 module.
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as error:
            raise InvalidInputError([Problem(str(self.path), "", f"cannot open the run history ({error})")]) from None
        with closing(connection):
            try:
                connection.execute("PRAGMA foreign_keys = ON")
                if create:
                    _prepare(connection)
                yield connection
            except sqlite3.DatabaseError as error:
                raise InvalidInputError(
                    [Problem(str(self.path), "", f"not a readable run history ({error}); move it away to start afresh")]
                ) from None

    # ------------------------------------------------------------------------------------------- writing

    def record(self, run: HistoryRun) -> None:
        """Add (or replace) one run with all its notebooks, atomically."""
        with self._connect(create=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM runs WHERE run_id = ?", (run.run_id,))  # cascades to its notebooks
                db.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run.run_id, run.root, run.experiment, run.backend, run.status, run.started_at,
                     run.finished_at, run.commit, run.branch),
                )  # fmt: skip
                db.executemany(
                    "INSERT INTO notebook_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (run.run_id, nb.step, nb.notebook, nb.status, nb.duration_s, nb.attempts,
                         json.dumps(nb.metrics, sort_keys=True), nb.code_id)
                        for nb in run.notebooks
                    ],
                )  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------------------------------- reading

    def notebook_history(
        self,
        *,
        root: str | None = None,
        notebooks: Sequence[str] | None = None,
        branch: str | None = None,
        before: str | None = None,
        last: int | None = None,
    ) -> dict[str, list[PastRun]]:
        """notebook -> its runs, newest first. `root`: only runs of that plan folder; `notebooks`: only
        these; `branch`: only runs on it; `before`: only runs started at or before this time (a report of
        an older run shows the history as it was then); `last`: at most this many runs per notebook."""
        clauses, args = [], []
        if root is not None:
            clauses.append("r.root = ?")
            args.append(root)
        if branch is not None:
            clauses.append("r.branch = ?")
            args.append(branch)
        if before is not None:
            clauses.append("r.started_at <= ?")
            args.append(before)
        if notebooks is not None:
            clauses.append(f"n.notebook IN ({', '.join('?' * len(notebooks))})")
            args.extend(notebooks)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        query = (
            "SELECT r.run_id, r.started_at, r.backend, r.commit_sha, r.branch, n.step, n.notebook, n.status, "
            "n.duration_s, n.attempts, n.metrics, n.code_id FROM notebook_runs n JOIN runs r USING (run_id) "
            f"{where} ORDER BY r.started_at DESC, r.run_id DESC"
        )
        found: dict[str, list[PastRun]] = {}
        try:
            with self._connect(create=False) as db:
                rows = db.execute(query, args).fetchall()
        except FileNotFoundError:
            return {}
        for run_id, started, backend, commit, branch_name, step, notebook, status, secs, attempts, metrics, code in rows:
            runs = found.setdefault(notebook, [])
            if last is not None and len(runs) >= last:
                continue
            record = NotebookOutcome(step, notebook, status, secs, attempts, _metrics(metrics), code)
            runs.append(PastRun(run_id, started, backend, commit, branch_name, record))
        return found

    def runs(self, run_ids: Iterable[str]) -> list[str]:
        """Which of `run_ids` the history holds."""
        ids = list(run_ids)
        if not ids:
            return []
        try:
            with self._connect(create=False) as db:
                rows = db.execute(f"SELECT run_id FROM runs WHERE run_id IN ({', '.join('?' * len(ids))})", ids)
                return [row[0] for row in rows]
        except FileNotFoundError:
            return []


def _metrics(text: str) -> dict[str, float]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}
