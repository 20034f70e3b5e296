"""``sqlite.sink``'s table writer: batches into a table, in the connection's thread.

`_TableWriter` creates the table (from the schema or the first record), adds
columns, upserts by the key, writes each batch in one transaction (refused
records isolated with savepoints) and rolls back to a rowid at recovery;
`open_writer` connects and makes one.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec

from .._records import record_type
from ._common import _connect, quote

if TYPE_CHECKING:
    from .sink import SqliteSinkConfig

SQL_TYPES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "bytes": "BLOB",
    "any": "",
    "list": "TEXT",
    "dict": "TEXT",
}
"""Column type for each schema type name (lists and dicts are JSON text)."""

_json = msgspec.json.Encoder()


ROWID_NAMES = ("rowid", "_rowid_", "oid")
"""The names of a table's rowid, unless a column of that name hides one."""

_RECORD_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    OverflowError,
)
"""Errors that blame one record (a constraint, a value too big), not the database."""


class _Refused(Exception):
    """A record this sink will not write; the message is the reason."""


def _value(value: Any) -> Any:
    """The SQLite form of a value: dicts and lists become JSON text."""
    kind = type(value)
    if value is None or kind is str or kind is float or kind is bytes:
        return value
    if kind is int:
        if not -(2**63) <= value < 2**63:
            msg = f"integer {value} is out of SQLite's 64-bit range"
            raise _Refused(msg)
        return value
    if kind is bool:
        return int(value)
    if kind is dict or kind is list or kind is tuple:
        try:
            return _json.encode(value).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            msg = f"cannot store as JSON text: {exc}"
            raise _Refused(msg) from None
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    msg = f"unsupported value type {kind.__name__}"
    raise _Refused(msg)


def _column_type(value: Any) -> str:
    kind = type(value)
    if kind is bool or kind is int:
        return "INTEGER"
    if kind is float:
        return "REAL"
    if kind is bytes or kind is bytearray or kind is memoryview:
        return "BLOB"
    if value is None:
        return ""
    return "TEXT"


class _TableWriter:
    """Writes batches into one table; used only in the connection's thread."""

    def __init__(self, conn: sqlite3.Connection, config: SqliteSinkConfig) -> None:
        self.conn = conn
        self.config = config
        self.table = quote(config.table)
        self.key = config.key_fields
        self._schema_type: Any = record_type(config.schema) if config.schema else None
        self._statements: dict[tuple[str, ...], str] = {}
        self.columns = self._load_columns()
        if self.columns and self.key:
            self._check_key()

    def _load_columns(self) -> dict[str, str]:
        # SQLite column names are case-insensitive: keyed by lower case.
        rows = self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        return {row[1].lower(): row[2] for row in rows}

    def _check_key(self) -> None:
        """An existing table needs a unique index on the key for upserts."""
        missing = [k for k in self.key if k.lower() not in self.columns]
        if missing:
            msg = (
                f"table {self.config.table!r} has no column {missing[0]!r} "
                f"for its key {list(self.key)}"
            )
            raise ValueError(msg)
        if self._has_unique_key():
            return
        index = quote(f"{self.config.table}__key")
        cols = ", ".join(map(quote, self.key))
        try:
            self.conn.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {self.table} ({cols})"
            )
        except sqlite3.IntegrityError as exc:
            msg = (
                f"table {self.config.table!r} holds rows with the same key "
                f"{list(self.key)}, so it cannot be upserted by that key: {exc}"
            )
            raise ValueError(msg) from None

    # --- checkpoints (tables written without a key) ----------------------------------

    def _rowid_name(self) -> str:
        """A name that reads the table's rowid (which appends keep increasing).

        Raises:
            ValueError: The table has no rowid (``WITHOUT ROWID``), or columns
                hide all of its names.
        """
        name = next((n for n in ROWID_NAMES if n not in self.columns), None)
        if name is not None:
            try:
                self.conn.execute(f"SELECT {name} FROM {self.table} LIMIT 0")
            except sqlite3.OperationalError:
                name = None  # "no such column": a WITHOUT ROWID table
        if name is None:
            msg = (
                f"table {self.config.table!r} has no rowid to roll back to at a "
                f"checkpoint (a WITHOUT ROWID table, or columns named "
                f"{', '.join(ROWID_NAMES)}); give the sink a key, its primary "
                f"key, so that replayed records are upserted"
            )
            raise ValueError(msg)
        return name

    def check_rowid(self) -> None:
        """Refuse now a table that `last_rowid` could not read."""
        if self.columns:
            self._rowid_name()

    def last_rowid(self) -> int:
        """The table's highest rowid (0 when it is empty or not created yet)."""
        if not self.columns:
            return 0
        name = self._rowid_name()
        row = self.conn.execute(f"SELECT max({name}) FROM {self.table}").fetchone()
        return 0 if row[0] is None else int(row[0])

    def roll_back_to(self, rowid: int) -> int:
        """Delete the rows above ``rowid``, in one transaction.

        Returns:
            How many rows were deleted.
        """
        if not self.columns:
            return 0  # the table was never created: nothing to delete
        name = self._rowid_name()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                f"DELETE FROM {self.table} WHERE {name} > ?", (rowid,)
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return cursor.rowcount

    def _has_unique_key(self) -> bool:
        key = {k.lower() for k in self.key}
        info = self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        if {row[1].lower() for row in info if row[5]} == key:
            return True
        indexes = self.conn.execute(f"PRAGMA index_list({self.table})").fetchall()
        for _seq, name, unique, _origin, partial in indexes:
            if unique and not partial:
                cols = self.conn.execute(f"PRAGMA index_info({quote(name)})")
                if {row[2].lower() for row in cols} == key:
                    return True
        return False

    # --- one batch, one transaction -------------------------------------------------

    def write(self, batch: list[Any]) -> tuple[int, list[tuple[Any, str]]]:
        """Write a batch in one transaction.

        Returns:
            How many records were written, and each refused record with the
            reason.

        Raises:
            sqlite3.Error: The database failed (locked, full, read-only); the
                batch was rolled back.
        """
        refused: list[tuple[Any, str]] = []
        rows: list[tuple[tuple[str, ...], list[Any], Any]] = []
        for item in batch:
            try:
                fields, values = self._prepare(item)
            except _Refused as exc:
                refused.append((item, str(exc)))
                continue
            rows.append((fields, values, item))
        if not rows:
            return 0, refused
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            written = self._write_rows(rows, refused)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # DDL was rolled back too: forget columns and statements.
            self.columns = self._load_columns()
            self._statements.clear()
            raise
        return written, refused

    def _prepare(self, item: Any) -> tuple[tuple[str, ...], list[Any]]:
        if type(item) is not dict:
            msg = f"expected a record (a mapping of fields), got {type(item).__name__}"
            raise _Refused(msg)
        if self._schema_type is not None:
            try:
                msgspec.convert(item, self._schema_type)
            except msgspec.ValidationError as exc:
                msg = f"schema violation: {exc}"
                raise _Refused(msg) from None
        for k in self.key:
            if item.get(k) is None:
                msg = f"key field {k!r} is missing or null"
                raise _Refused(msg)
        fields: list[str] = []
        values: list[Any] = []
        for name, value in item.items():
            if type(name) is not str:
                msg = f"field names must be text, got {name!r}"
                raise _Refused(msg)
            fields.append(name)
            values.append(_value(value))
        if len({f.lower() for f in fields}) != len(fields):
            msg = "field names differ only in case (SQLite columns do not)"
            raise _Refused(msg)
        return tuple(fields), values

    def _write_rows(
        self,
        rows: list[tuple[tuple[str, ...], list[Any], Any]],
        refused: list[tuple[Any, str]],
    ) -> int:
        written = 0
        # Consecutive records with the same fields share one executemany; runs
        # keep the batch's order, so that the latest record of a key wins.
        i = 0
        while i < len(rows):
            fields = rows[i][0]
            j = i
            while j < len(rows) and rows[j][0] == fields:
                j += 1
            run = rows[i:j]
            i = j
            usable = self._columns_for(run, refused)
            if not usable:
                continue
            sql = self._statement(fields)
            self.conn.execute("SAVEPOINT batch_run")
            try:
                self.conn.executemany(sql, [values for _, values, _ in usable])
                self.conn.execute("RELEASE batch_run")
                written += len(usable)
            except _RECORD_ERRORS:
                self.conn.execute("ROLLBACK TO batch_run")
                self.conn.execute("RELEASE batch_run")
                written += self._one_by_one(sql, usable, refused)
        return written

    def _one_by_one(
        self,
        sql: str,
        run: list[tuple[tuple[str, ...], list[Any], Any]],
        refused: list[tuple[Any, str]],
    ) -> int:
        written = 0
        for _, values, item in run:
            self.conn.execute("SAVEPOINT one_record")
            try:
                self.conn.execute(sql, values)
            except _RECORD_ERRORS as exc:
                self.conn.execute("ROLLBACK TO one_record")
                refused.append((item, f"refused by the database: {exc}"))
            else:
                written += 1
            self.conn.execute("RELEASE one_record")
        return written

    def _columns_for(
        self,
        run: list[tuple[tuple[str, ...], list[Any], Any]],
        refused: list[tuple[Any, str]],
    ) -> list[tuple[tuple[str, ...], list[Any], Any]]:
        """Create the table or add columns for a run of records, as configured."""
        fields, values, _ = run[0]
        if not self.columns:
            self._create(fields, values)
        new = [f for f in fields if f.lower() not in self.columns]
        if not new:
            return run
        if self.config.new_fields == "dead_letter":
            names = ", ".join(new)
            reason = f"fields not in table {self.config.table!r}: {names}"
            refused.extend((item, reason) for _, _, item in run)
            return []
        for name in new:
            value = values[fields.index(name)]
            decl = f"{quote(name)} {_column_type(value)}".rstrip()
            self.conn.execute(f"ALTER TABLE {self.table} ADD COLUMN {decl}")
            self.columns[name.lower()] = _column_type(value)
        self._statements.clear()
        return run

    def _create(self, fields: tuple[str, ...], values: list[Any]) -> None:
        schema = self.config.schema
        if schema is not None:
            columns = {name: SQL_TYPES[t.rstrip("?")] for name, t in schema.items()}
            for name, value in zip(fields, values, strict=True):
                columns.setdefault(name, _column_type(value))
        else:
            columns = {
                name: _column_type(value)
                for name, value in zip(fields, values, strict=True)
            }
        decls = [f"{quote(name)} {kind}".rstrip() for name, kind in columns.items()]
        if self.key:
            decls.append(f"PRIMARY KEY ({', '.join(map(quote, self.key))})")
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(decls)})"
        )
        self.columns = self._load_columns()

    def _statement(self, fields: tuple[str, ...]) -> str:
        sql = self._statements.get(fields)
        if sql is None:
            cols = ", ".join(map(quote, fields))
            marks = ", ".join("?" * len(fields))
            sql = f"INSERT INTO {self.table} ({cols}) VALUES ({marks})"
            if self.key:
                target = ", ".join(map(quote, self.key))
                updates = [
                    f"{quote(f)} = excluded.{quote(f)}"
                    for f in fields
                    if f not in self.key
                ]
                action = (
                    f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
                )
                sql += f" ON CONFLICT ({target}) {action}"
            self._statements[fields] = sql
        return sql


def open_writer(config: SqliteSinkConfig) -> _TableWriter:
    """Connect (WAL, configured synchronous) and prepare the table's writer.

    Runs in the connection's thread.
    """
    conn = _connect(config.path, busy_timeout_ms=config.busy_timeout_ms)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {config.synchronous.upper()}")
        return _TableWriter(conn, config)
    except BaseException:
        conn.close()
        raise
