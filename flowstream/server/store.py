"""SQLite persistence of workflows and run records.

One file (``flowstream.db`` by default, WAL journal) with two tables:
``workflows`` (name, the workflow as JSON, timestamps) and ``runs`` (status,
timings, the workflow as it ran, and once finished its nodes, outputs, dead
letters and a bounded record of its events). Both survive restarts; a run
still marked active when the server starts again was cut short with the
previous process: `take_unfinished` hands those to the run manager, which
resumes the ones that can resume (stream runs with checkpoints) and marks the
others ``interrupted``. A workflow uploaded as text (YAML, with its comments)
keeps that text next to its parsed form. Times are unix seconds in the
database and ISO 8601 strings in the API (`schemas.iso`).

Calls are synchronous: each is one small statement on a local file, cheaper
than a thread hop, and every call comes from the event loop's thread.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.workflow import Workflow
from ..runtime.result import DeadLetter
from .schemas import (
    NodeStatus,
    RunDetail,
    RunSummary,
    WorkflowSummary,
    from_iso,
    iso,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["RunOutcome", "Store", "Unfinished"]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    source TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL,
    error TEXT,
    graph BLOB NOT NULL,
    outcome BLOB,
    events BLOB,
    restarts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
"""

# Columns added since version 1, for databases made by an older server.
_MIGRATIONS = (
    ("workflows", "source", "TEXT"),
    ("runs", "restarts", "INTEGER NOT NULL DEFAULT 0"),
)


class Unfinished(msgspec.Struct, kw_only=True):
    """A run a previous server process left active (`Store.take_unfinished`)."""

    run_id: str
    workflow: Workflow
    mode: str
    restarts: int


class RunOutcome(msgspec.Struct, kw_only=True):
    """What a finished run leaves behind, stored as one JSON document."""

    nodes: dict[str, NodeStatus]
    outputs: dict[str, dict[str, list[Any]]] | None = None
    dead_letters: list[DeadLetter] | None = None
    truncated: bool = False
    events_dropped: int = 0


def _enc_hook(obj: Any) -> Any:
    # Outputs are whatever nodes emitted; a value with no JSON form is kept
    # as its repr rather than losing the whole record.
    return repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_workflow_decoder = msgspec.json.Decoder(Workflow)
_outcome_decoder = msgspec.json.Decoder(RunOutcome)
_events_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class Store:
    """Workflows and run records in one SQLite file.

    Args:
        path: The database file (created if missing), or ``:memory:``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, column, decl in _MIGRATIONS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database; idempotent."""
        self._db.close()

    # --- workflows -------------------------------------------------------------

    def put_workflow(self, workflow: Workflow, source: str | None = None) -> bool:
        """Store a workflow under its name; return True if it is new.

        Args:
            workflow: The parsed workflow.
            source: The text it was uploaded as (YAML with its comments), to
                give back to an editor; None when it came as JSON.
        """
        now = time.time()
        doc = _encoder.encode(workflow)
        cur = self._db.execute(
            "UPDATE workflows SET document = ?, updated_at = ?, source = ?"
            " WHERE name = ?",
            (doc, now, source, workflow.name),
        )
        if cur.rowcount:
            return False
        self._db.execute(
            "INSERT INTO workflows (name, document, created_at, updated_at, source)"
            " VALUES (?, ?, ?, ?, ?)",
            (workflow.name, doc, now, now, source),
        )
        return True

    def workflow_source(self, name: str) -> str | None:
        """The text a workflow was uploaded as, or None (JSON, or no such one)."""
        row = self._db.execute(
            "SELECT source FROM workflows WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else row[0]

    def get_workflow(self, name: str) -> Workflow | None:
        """Return the stored workflow, or None."""
        row = self._db.execute(
            "SELECT document FROM workflows WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else _workflow_decoder.decode(row[0])

    def list_workflows(self) -> list[WorkflowSummary]:
        """Every stored workflow, by name."""
        rows = self._db.execute(
            "SELECT document, created_at, updated_at FROM workflows ORDER BY name"
        ).fetchall()
        summaries = []
        for doc, created, updated in rows:
            wf = _workflow_decoder.decode(doc)
            summaries.append(
                WorkflowSummary(
                    name=wf.name,
                    mode=wf.mode,
                    description=wf.description,
                    nodes=len(wf.nodes),
                    connections=len(wf.connections),
                    created_at=iso(created),
                    updated_at=iso(updated),
                )
            )
        return summaries

    def delete_workflow(self, name: str) -> bool:
        """Delete a workflow (its run records stay); False if there was none."""
        cur = self._db.execute("DELETE FROM workflows WHERE name = ?", (name,))
        return cur.rowcount > 0

    # --- runs ------------------------------------------------------------------

    def insert_run(self, run: RunSummary, graph: Workflow) -> None:
        """Record a run that just started."""
        self._db.execute(
            "INSERT INTO runs (run_id, workflow, mode, status, started_at, graph)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                run.run_id,
                run.workflow,
                run.mode,
                run.status,
                from_iso(run.started_at),
                _encoder.encode(graph),
            ),
        )

    def set_status(self, run_id: str, status: str) -> None:
        """Change an active run's status (``stopping``)."""
        self._db.execute(
            "UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id)
        )

    def finish_run(
        self,
        summary: RunSummary,
        outcome: RunOutcome,
        events: list[bytes],
    ) -> None:
        """Record how a run ended, what it produced and its events."""
        self._db.execute(
            "UPDATE runs SET status = ?, ended_at = ?, duration_s = ?, error = ?,"
            " outcome = ?, events = ? WHERE run_id = ?",
            (
                summary.status,
                None if summary.ended_at is None else from_iso(summary.ended_at),
                summary.duration_s,
                summary.error,
                _encoder.encode(outcome),
                b"[" + b",".join(events) + b"]",
                summary.run_id,
            ),
        )

    def take_unfinished(self) -> list[Unfinished]:
        """The runs a previous process left active, oldest first.

        They stay marked active: the caller resumes each (`resume_run`) or
        ends it (`interrupt_run`).
        """
        rows = self._db.execute(
            "SELECT run_id, graph, mode, restarts FROM runs"
            " WHERE status IN ('running', 'stopping') ORDER BY started_at"
        ).fetchall()
        return [
            Unfinished(
                run_id=run_id,
                workflow=_workflow_decoder.decode(graph),
                mode=mode,
                restarts=restarts,
            )
            for run_id, graph, mode, restarts in rows
        ]

    def interrupt_run(self, run_id: str, reason: str) -> None:
        """End a run the previous process left active as ``interrupted``."""
        now = time.time()
        self._db.execute(
            "UPDATE runs SET status = 'interrupted', error = ?, ended_at = ?,"
            " duration_s = ? - started_at WHERE run_id = ?",
            (reason, now, now, run_id),
        )

    def resume_run(self, run_id: str) -> int:
        """Count one more restart of a run that resumes; return the new count."""
        self._db.execute(
            "UPDATE runs SET status = 'running', restarts = restarts + 1"
            " WHERE run_id = ?",
            (run_id,),
        )
        row = self._db.execute(
            "SELECT restarts FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def list_runs(
        self, workflow: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """The latest runs first, optionally of one workflow."""
        sql = (
            "SELECT run_id, workflow, mode, status, started_at, ended_at,"
            " duration_s, error, restarts FROM runs"
        )
        args: tuple[Any, ...] = ()
        if workflow is not None:
            sql += " WHERE workflow = ?"
            args = (workflow,)
        sql += " ORDER BY started_at DESC LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_summary(row) for row in rows]

    def get_run(self, run_id: str) -> RunDetail | None:
        """A run's full record, or None."""
        row = self._db.execute(
            "SELECT run_id, workflow, mode, status, started_at, ended_at,"
            " duration_s, error, restarts, graph, outcome FROM runs"
            " WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        summary = _summary(row[:9])
        detail = RunDetail(
            **msgspec.structs.asdict(summary),
            graph=_workflow_decoder.decode(row[9]),
        )
        if row[10] is not None:
            outcome = _outcome_decoder.decode(row[10])
            detail.nodes = outcome.nodes
            detail.outputs = outcome.outputs
            detail.dead_letters = outcome.dead_letters
            detail.truncated = outcome.truncated
            detail.events_dropped = outcome.events_dropped
        return detail

    def run_events(self, run_id: str) -> list[bytes] | None:
        """A finished run's recorded events (JSON, one per item), or None."""
        row = self._db.execute(
            "SELECT events FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        if row[0] is None:
            return []
        return [bytes(raw) for raw in _events_decoder.decode(row[0])]


def _summary(row: tuple[Any, ...]) -> RunSummary:
    run_id, workflow, mode, status, started, ended, duration, error, restarts = row
    return RunSummary(
        run_id=run_id,
        workflow=workflow,
        mode=mode,
        status=status,
        started_at=iso(started),
        ended_at=None if ended is None else iso(ended),
        duration_s=duration,
        error=error,
        restarts=restarts,
    )
