"""Clicks per page in 10 s windows, into SQLite: the typed dataflow API.

Run it with ``python -m examples.clicks`` (it writes a small JSONL file of
clicks first, then reads it back through the pipeline). ``mypy --strict``
checks it: the lambdas see a ``Click``.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

import msgspec

from flowstream.dataflow import Dataflow, count, file_source, sqlite_sink, tumbling


class Click(msgspec.Struct):
    """One click on a page."""

    user: str
    page: str
    ts: float


def build(folder: Path) -> Dataflow:
    """The pipeline: clicks (not by bots) counted per page per 10 s window."""
    flow = Dataflow("clicks")
    clicks = flow.source(file_source(str(folder / "clicks.jsonl")), schema=Click)
    counts = (
        clicks.filter(lambda c: c.user != "bot")
        .key_by(lambda c: c.page)
        .window(tumbling(seconds=10), count(), timestamp=lambda c: c.ts)
    )
    counts.sink(
        sqlite_sink(str(folder / "clicks.db"), table="counts", key=("key", "start"))
    )
    return flow


def main() -> None:
    """Write sample clicks, run the pipeline, print the table."""
    folder = Path(tempfile.mkdtemp())
    sample = [
        ("ann", "/a", 1.0),
        ("bot", "/a", 2.0),
        ("bob", "/b", 3.0),
        ("ann", "/a", 12.0),
    ]
    lines = [json.dumps({"user": u, "page": p, "ts": t}) for u, p, t in sample]
    (folder / "clicks.jsonl").write_text("\n".join(lines) + "\n")
    result = build(folder).run()
    print(result.status)
    with sqlite3.connect(folder / "clicks.db") as db:
        for row in db.execute(
            "SELECT key, start, value FROM counts ORDER BY start, key"
        ):
            print(row)


if __name__ == "__main__":
    main()
