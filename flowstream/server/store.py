"""SQLite persistence of workflows and run records.

One file (``flowstream.db`` by default, WAL journal) with two tables:
``workflows`` (name, the workflow as JSON, timestamps) and ``runs`` (status,
timings, the workflow as it ran, and once finished its nodes, outputs, dead
letters and a bounded record of its events). Both survive restarts; a run
still marked active when the server starts again was lost with the previous
process and is marked failed.

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
from .schemas import NodeStatus, RunDetail, RunSummary, WorkflowSummary

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["RunOutcome", "Store"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
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
    events BLOB
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_at);
"""


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
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database; idempotent."""
        self._db.close()

    # --- workflows -------------------------------------------------------------

    def put_workflow(self, workflow: Workflow) -> bool:
        """Store a workflow under its name; return True if it is new."""
        now = time.time()
        doc = _encoder.encode(workflow)
        cur = self._db.execute(
            "UPDATE workflows SET document = ?, updated_at = ? WHERE name = ?",
            (doc, now, workflow.name),
        )
        if cur.rowcount:
            return False
        self._db.execute(
            "INSERT INTO workflows (name, document, created_at, updated_at)"
            " VALUES (?, ?, ?, ?)",
            (workflow.name, doc, now, now),
        )
        return True

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
                    created_at=created,
                    updated_at=updated,
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
                run.started_at,
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
                summary.ended_at,
                summary.duration_s,
                summary.error,
                _encoder.encode(outcome),
                b"[" + b",".join(events) + b"]",
                summary.run_id,
            ),
        )

    def fail_unfinished(self, reason: str) -> int:
        """Mark runs left active by a previous process as failed; return how many."""
        cur = self._db.execute(
            "UPDATE runs SET status = 'failed', error = ?, ended_at = ?"
            " WHERE status IN ('running', 'stopping')",
            (reason, time.time()),
        )
        return cur.rowcount

    def list_runs(
        self, workflow: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """The latest runs first, optionally of one workflow."""
        sql = (
            "SELECT run_id, workflow, mode, status, started_at, ended_at,"
            " duration_s, error FROM runs"
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
            " duration_s, error, graph, outcome FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        summary = _summary(row[:8])
        detail = RunDetail(
            **msgspec.structs.asdict(summary),
            graph=_workflow_decoder.decode(row[8]),
        )
        if row[9] is not None:
            outcome = _outcome_decoder.decode(row[9])
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
    run_id, workflow, mode, status, started, ended, duration, error = row
    return RunSummary(
        run_id=run_id,
        workflow=workflow,
        mode=mode,
        status=status,
        started_at=started,
        ended_at=ended,
        duration_s=duration,
        error=error,
    )
