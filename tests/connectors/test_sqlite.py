from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import pytest

from connectors.sqlite import SqliteSinkConfig, open_writer, sqlite_sink, sqlite_source
from flowstream import FlowRuntime, Workflow, WorkflowExecutor, default_registry
from flowstream.errors import WorkflowValidationError
from tests.local import local

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def runtime() -> FlowRuntime:
    registry = default_registry(entry_points=False)
    registry.register_all([sqlite_sink, sqlite_source])
    return FlowRuntime(registry)


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with connect(path) as conn:
        return conn.execute(sql).fetchall()


def write(
    path: Path, values: list[Any], capacity: int | None = None, **config: Any
) -> Workflow:
    return (
        Workflow("save")
        .node("src", "source.values", values=values)
        .node("db", "sqlite.sink", path=str(path), table="t", **config)
        .connect("src -> db", capacity=capacity)
    )


async def wait_for(condition: Any, what: str, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            msg = f"timed out waiting for {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.005)


def items_in(executor: WorkflowExecutor, node_id: str) -> int:
    stats = executor.statistics().get(node_id)
    return stats.items_in if stats is not None else 0


# --- sqlite.sink ------------------------------------------------------------------


async def test_sink_creates_the_table_from_the_first_record(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    records = [
        {"id": 1, "name": "ada", "score": 1.5, "ok": True, "tags": ["x"], "raw": b"\0"},
        {"id": 2, "name": "bob", "meta": {"k": [1, 2]}},
    ]
    executor = local(runtime.executor(write(db, records)))
    result = await executor.run()
    assert result.ok, result.error
    assert rows(db, "SELECT id, name, score, ok, tags, raw, meta FROM t") == [
        (1, "ada", 1.5, 1, '["x"]', b"\0", None),
        (2, "bob", None, None, None, None, '{"k":[1,2]}'),
    ]
    types = {r[1]: r[2] for r in rows(db, "PRAGMA table_info(t)")}
    assert types == {
        "id": "INTEGER",
        "name": "TEXT",
        "score": "REAL",
        "ok": "INTEGER",
        "tags": "TEXT",
        "raw": "BLOB",
        "meta": "TEXT",  # added by ALTER TABLE for the second record
    }
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert executor.state.for_node("db") == {"rows": 2, "batches": 1}


async def test_keyed_upserts_keep_one_row_per_key_with_the_latest_values(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    first = [{"id": 1, "v": "a", "n": 1}, {"id": 2, "v": "b"}, {"id": 1, "v": "c"}]
    assert (await runtime.arun(write(db, first, key="id"))).ok
    # Replaying a batch changes nothing: the keyed upsert is idempotent.
    assert (await runtime.arun(write(db, first, key="id"))).ok
    assert (await runtime.arun(write(db, [{"id": 2, "v": "d"}], key="id"))).ok
    assert rows(db, "SELECT id, v, n FROM t ORDER BY id") == [
        (1, "c", 1),
        (2, "d", None),
    ]


async def test_composite_keys_and_one_transaction_per_batch(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    records = [{"a": i % 3, "b": i % 2, "n": i} for i in range(60)]
    executor = local(runtime.executor(write(db, records, key=["a", "b"])))
    result = await executor.run()
    assert result.ok, result.error
    got = rows(db, "SELECT a, b, n FROM t ORDER BY a, b")
    assert got == [
        (0, 0, 54),
        (0, 1, 57),
        (1, 0, 58),
        (1, 1, 55),
        (2, 0, 56),
        (2, 1, 59),
    ]
    state = executor.state.for_node("db")
    assert state["rows"] == 60
    assert state["batches"] == 1  # source.values hands over one batch


async def test_records_the_sink_cannot_write_are_dead_lettered(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    with connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    records = [
        {"id": 1, "v": "ok"},
        {"v": "no key"},
        {"id": 2, "v": None},  # NOT NULL: refused by the database
        "not a record",
        {"id": 3, "v": 2**70},
        {"id": 4, "v": "also ok"},
    ]
    result = await runtime.arun(write(db, records, key="id"))
    assert result.ok, result.error
    assert rows(db, "SELECT id, v FROM t ORDER BY id") == [(1, "ok"), (4, "also ok")]
    reasons = [d.reason for d in result.dead_letters]
    assert reasons[0] == "key field 'id' is missing or null"
    assert reasons[1] == "expected a record (a mapping of fields), got str"
    assert reasons[2].startswith("integer 1180591620717411303424 is out of")
    assert reasons[3].startswith("refused by the database: NOT NULL constraint")
    assert [d.item for d in result.dead_letters][3] == {"id": 2, "v": None}


async def test_a_database_error_rolls_the_whole_batch_back(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    with connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, v TEXT)")
        # Fails while the batch is being written (not a constraint: no table).
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON t WHEN NEW.v = 'boom' "
            "BEGIN INSERT INTO missing VALUES (1); END"
        )
    records = [{"id": 1, "v": "a"}, {"id": 2, "v": "boom"}, {"id": 3, "v": "c"}]
    result = await runtime.arun(write(db, records))
    assert result.status == "failed"
    assert result.error is not None
    assert "no such table: main.missing" in result.error
    assert rows(db, "SELECT count(*) FROM t") == [(0,)]


async def test_field_names_match_columns_without_case(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    records = [
        {"id": 1, "Name": "a"},
        {"id": 1, "NAME": "b"},
        {"id": 2, "x": 1, "X": 2},
    ]
    result = await runtime.arun(write(db, records, key="id"))
    assert result.ok, result.error
    assert rows(db, "SELECT * FROM t") == [(1, "b")]
    (letter,) = result.dead_letters
    assert letter.reason == "field names differ only in case (SQLite columns do not)"


async def test_new_fields_can_be_dead_lettered_instead_of_added(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    records = [{"id": 1, "v": "a"}, {"id": 2, "v": "b", "extra": 1}]
    result = await runtime.arun(write(db, records, new_fields="dead_letter"))
    assert result.ok, result.error
    assert rows(db, "SELECT * FROM t") == [(1, "a")]
    (letter,) = result.dead_letters
    assert letter.reason == "fields not in table 't': extra"


async def test_a_schema_types_the_table_and_checks_records(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    schema = {"id": "int", "name": "str", "when": "float?"}
    records = [{"id": 1, "name": "ada"}, {"id": "2", "name": "bob"}]
    result = await runtime.arun(write(db, records, key="id", schema=schema))
    assert result.ok, result.error
    assert rows(db, "SELECT * FROM t") == [(1, "ada", None)]
    info = rows(db, "PRAGMA table_info(t)")
    assert [(r[1], r[2], r[5]) for r in info] == [
        ("id", "INTEGER", 1),
        ("name", "TEXT", 0),
        ("when", "REAL", 0),
    ]
    (letter,) = result.dead_letters
    assert letter.reason.startswith("schema violation: Expected `int`, got `str`")


async def test_an_existing_table_gets_a_unique_index_for_its_key(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    with connect(db) as conn:
        conn.execute("CREATE TABLE t (code TEXT, v INTEGER)")
        conn.execute("INSERT INTO t VALUES ('a', 1)")
    result = await runtime.arun(write(db, [{"code": "a", "v": 2}], key="code"))
    assert result.ok, result.error
    assert rows(db, "SELECT * FROM t") == [("a", 2)]


async def test_an_existing_table_with_duplicate_keys_fails_clearly(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    with connect(db) as conn:
        conn.execute("CREATE TABLE t (code TEXT, v INTEGER)")
        conn.execute("INSERT INTO t VALUES ('a', 1), ('a', 2)")
    result = await runtime.arun(write(db, [{"code": "a", "v": 3}], key="code"))
    assert result.status == "failed"
    assert result.error is not None
    assert "'db'" in result.error
    assert "holds rows with the same key ['code']" in result.error


def test_synchronous_full_is_configurable(tmp_path: Path) -> None:
    configs = [
        (SqliteSinkConfig(path=str(tmp_path / "x.db"), table="t"), 1),
        (
            SqliteSinkConfig(
                path=str(tmp_path / "x.db"), table="t", synchronous="full"
            ),
            2,
        ),
    ]
    for config, expected in configs:
        writer = open_writer(config)
        try:
            assert writer.conn.execute("PRAGMA synchronous").fetchone() == (expected,)
            assert writer.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            writer.conn.close()


async def test_sqlite_calls_run_off_the_event_loop_thread(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    seen: list[str] = []

    def trace(statement: str) -> None:
        seen.append(threading.current_thread().name)

    original = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = original(*args, **kwargs)
        conn.set_trace_callback(trace)
        return conn

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite3, "connect", traced)
        result = await runtime.arun(write(db, [{"id": 1}]))
    assert result.ok, result.error
    assert seen
    assert set(seen) == {"flowstream-sqlite-db_0"}


# --- sqlite.source ----------------------------------------------------------------


def read(path: Path, query: str, **config: Any) -> Workflow:
    return (
        Workflow("read", mode="stream" if config.get("follow") else "dag")
        .node("src", "sqlite.source", path=str(path), query=query, **config)
        .node("out", "sink.collect")
        .connect("src -> out")
    )


INCREMENTAL = "SELECT rowid AS rowid, * FROM t WHERE rowid > :last_rowid ORDER BY rowid"


async def test_source_emits_rows_as_dicts_and_tracks_the_last_rowid(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    records = [{"id": i, "kind": "even" if i % 2 == 0 else "odd"} for i in range(5)]
    assert (await runtime.arun(write(db, records))).ok
    executor = local(
        runtime.executor(
            read(
                db,
                "SELECT rowid AS rowid, id FROM t "
                "WHERE rowid > :last_rowid AND kind = :kind ORDER BY rowid",
                params={"kind": "even"},
                batch_size=2,
            )
        )
    )
    result = await executor.run()
    assert result.ok, result.error
    assert result.output("out") == [
        {"rowid": 1, "id": 0},
        {"rowid": 3, "id": 2},
        {"rowid": 5, "id": 4},
    ]
    assert executor.state.for_node("src") == {"rows": 3, "last_rowid": 5}


async def test_source_follow_emits_rows_committed_while_it_runs(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    with connect(db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.execute("INSERT INTO t VALUES (0)")
        executor = local(
            runtime.executor(read(db, INCREMENTAL, follow=True, poll_interval_ms=5))
        )
        run = asyncio.ensure_future(executor.run())
        await wait_for(lambda: items_in(executor, "out") >= 1, "the first row")
        for n in range(1, 4):
            conn.execute("INSERT INTO t VALUES (?)", (n,))
        await wait_for(lambda: items_in(executor, "out") >= 4, "the new rows")
        executor.stop()
        result = await run
    assert result.ok, result.error
    assert result.output("out") == [{"rowid": n + 1, "n": n} for n in range(4)]
    assert executor.state.for_node("src")["last_rowid"] == 4


async def test_a_query_without_the_rowid_column_fails_clearly(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    assert (await runtime.arun(write(db, [{"n": 1}]))).ok
    result = await runtime.arun(read(db, "SELECT n FROM t WHERE rowid > :last_rowid"))
    assert result.status == "failed"
    assert result.error is not None
    assert (
        "has no 'rowid' column" in result.error or "no 'rowid' column" in result.error
    )


async def test_a_missing_database_fails_the_source_at_start(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    result = await runtime.arun(read(tmp_path / "nope.db", "SELECT 1"))
    assert result.status == "failed"
    assert result.error is not None
    assert "'src'" in result.error
    assert not (tmp_path / "nope.db").exists()  # read-only: never created


async def test_a_query_cannot_attach_another_database(
    runtime: FlowRuntime, tmp_path: Path
) -> None:
    # On a server, the node's path is confined to the data directory; an
    # ATTACH in the query would open any other file (the server's own store).
    db, other = tmp_path / "app.db", tmp_path / "other.db"
    assert (await runtime.arun(write(db, [{"id": 1}]))).ok
    with connect(other) as conn:
        conn.execute("CREATE TABLE secret (v)")
    result = await runtime.arun(read(db, f"ATTACH DATABASE '{other}' AS o"))
    assert result.status == "failed"
    assert "too many attached databases" in (result.error or "")


# --- config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_type", "config", "field", "words"),
    [
        ("sqlite.sink", {"path": "x.db", "table": ""}, "config.table", "table"),
        (
            "sqlite.sink",
            {"path": "x.db", "table": "sqlite_x"},
            "config.table",
            "reserved",
        ),
        ("sqlite.sink", {"path": "x.db", "table": "t", "key": []}, "config.key", "key"),
        ("sqlite.sink", {"path": "x.db", "table": "t", "key": 3}, "config.key", "str"),
        (
            "sqlite.sink",
            {"path": "x.db", "table": "t", "key": "id", "schema": {"n": "int"}},
            "config.key",
            "key field 'id' is not in the schema",
        ),
        (
            "sqlite.sink",
            {"path": "x.db", "table": "t", "synchronous": "off"},
            "config.synchronous",
            "enum",
        ),
        (
            "sqlite.sink",
            {"path": "x.db", "table": "t", "new_fields": "ignore"},
            "config.new_fields",
            "enum",
        ),
        ("sqlite.sink", {"path": "x.db"}, "config.table", "missing required field"),
        (
            "sqlite.source",
            {"path": "x.db", "query": "SELECT * FROM t", "follow": True},
            "config.follow",
            ":last_rowid",
        ),
        (
            "sqlite.source",
            {"path": "x.db", "query": "SELECT 1", "batch_size": 0},
            "config.batch_size",
            "batch_size",
        ),
        (
            "sqlite.source",
            {"path": "x.db", "query": INCREMENTAL, "params": {"last_rowid": 3}},
            "config.params",
            "last_rowid",
        ),
    ],
)
def test_bad_config_names_the_node_and_field(
    runtime: FlowRuntime,
    node_type: str,
    config: dict[str, Any],
    field: str,
    words: str,
) -> None:
    wf = Workflow("bad").node("q", node_type, config)
    if node_type == "sqlite.sink":
        wf.node("src", "source.values", values=[]).connect("src -> q")
    with pytest.raises(WorkflowValidationError) as info:
        runtime.validate(wf)
    (problem,) = info.value.problems
    assert problem.node == "q"
    assert problem.field == field
    assert words in problem.message
