"""Where a `SharedStore` keeps its values: the `Storage` protocol and backends.

A backend maps (namespace, key) to bytes; the store does the encoding. Three
come with flowstream:

* `MemoryStorage`: a dict in this process; fast, gone when the process ends.
* `FileStorage`: one file holding every namespace, as JSON (readable) or
  MessagePack. Each write replaces the file atomically (a temporary file in
  the same directory, flushed with ``fsync``, then ``os.replace``), so a crash
  at any moment leaves either the old or the new file, never a torn one.
  Another process sees the new state on its next read. Writers in several
  processes at once can lose each other's updates: use SQLite for that.
* `SQLiteStorage`: one table in an SQLite database in WAL mode; safe for
  several processes reading and writing at once.

The file and SQLite backends do their I/O on one worker thread of their own,
in call order, so the event loop never waits on the disk. Close them with
``await storage.aclose()`` (or ``async with``); a backend left open warns.

A custom backend implements the five methods of `Storage`.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import warnings
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    Protocol,
    TypeVar,
    final,
    runtime_checkable,
)

import msgspec

from ..errors import DecodeError
from ..runtime.sqlite_worker import SQLiteWorker

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType
    from typing import Self

__all__ = [
    "FileFormat",
    "FileStorage",
    "MemoryStorage",
    "SQLiteStorage",
    "Storage",
]

T = TypeVar("T")

FileFormat = Literal["json", "msgpack"]
MSGPACK_SUFFIXES = frozenset({".msgpack", ".mpk", ".mp"})


@runtime_checkable
class Storage(Protocol):
    """A backend of `SharedStore`: bytes under (namespace, key).

    Methods may be called concurrently from several tasks; each call must be
    atomic on its own.
    """

    async def get(self, namespace: str, key: str) -> bytes | None:
        """Return the bytes under the key, or None if it is absent."""
        ...

    async def set(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` under the key, replacing what was there."""
        ...

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the key; return whether it was there."""
        ...

    async def keys(self, namespace: str) -> list[str]:
        """Return the keys of one namespace, in any order."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources; idempotent."""
        ...


class _Closable:
    """``async with`` support and the "left open" warning, shared by backends."""

    _open = False

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(
                f"{self!r} was never closed; call 'await storage.aclose()'",
                ResourceWarning,
                stacklevel=2,
            )


@final
class MemoryStorage(_Closable):
    """Values in a dict of this process; nothing persists.

    Share one instance between stores to share their namespaces.
    """

    def __init__(self) -> None:
        self._data: dict[str, dict[str, bytes]] = {}

    async def get(self, namespace: str, key: str) -> bytes | None:
        """Return the bytes under the key, or None."""
        return self._data.get(namespace, {}).get(key)

    async def set(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` under the key."""
        self._data.setdefault(namespace, {})[key] = bytes(value)

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the key; return whether it was there."""
        space = self._data.get(namespace)
        if space is None or key not in space:
            return False
        del space[key]
        if not space:
            del self._data[namespace]
        return True

    async def keys(self, namespace: str) -> list[str]:
        """Return the keys of one namespace."""
        return list(self._data.get(namespace, ()))

    def namespaces(self) -> list[str]:
        """Return every namespace that holds a key, sorted."""
        return sorted(self._data)

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<MemoryStorage namespaces={len(self._data)}>"


_JSON_FILE = dict[str, dict[str, msgspec.Raw]]
_MSGPACK_FILE = dict[str, dict[str, bytes]]
_file_json = msgspec.json.Decoder(_JSON_FILE)
_file_msgpack = msgspec.msgpack.Decoder(_MSGPACK_FILE)
_tmp_counter = itertools.count()


@final
class FileStorage(_Closable):
    """Every namespace in one file, replaced atomically on each write.

    Args:
        path: The file; created on the first write (its directory must exist).
        format: ``"json"`` or ``"msgpack"``; by default MessagePack for the
            suffixes ``.msgpack``, ``.mpk`` and ``.mp``, JSON otherwise. In a
            JSON file each value is embedded as JSON, so it stays readable.
        fsync: Flush each write to the disk before it replaces the file (and
            the directory after). Turn off only for throwaway data.

    Raises:
        DecodeError: (from any method) The file exists but is not a store of
            this format; the message names the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        format: FileFormat | None = None,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        if format is None:
            format = (
                "msgpack" if self.path.suffix.lower() in MSGPACK_SUFFIXES else "json"
            )
        if format not in ("json", "msgpack"):
            msg = f"format must be 'json' or 'msgpack', got {format!r}"
            raise ValueError(msg)
        self.format: FileFormat = format
        self.fsync = fsync
        # Touched only on the worker thread: the file as last read or written,
        # and the (inode, mtime, size) it had then, to notice other writers.
        self._data: dict[str, dict[str, bytes]] = {}
        self._stamp: tuple[int, int, int] | None = None
        # A SQLiteWorker for its thread only (no connection): file I/O in
        # call order, off the event loop.
        self._worker: SQLiteWorker | None = None
        self._closed = False

    def _run(self, fn: Callable[..., T], *args: Any) -> Coroutine[Any, Any, T]:
        if self._closed:
            msg = f"{self!r} is closed"
            raise RuntimeError(msg)
        if self._worker is None:
            self._worker = SQLiteWorker("flowstream-file-storage")
            self._open = True
        return self._worker.run(fn, *args)

    async def get(self, namespace: str, key: str) -> bytes | None:
        """Return the bytes under the key, or None (re-reading a changed file)."""
        return await self._run(self._get, namespace, key)

    async def set(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` under the key and replace the file."""
        await self._run(self._set, namespace, key, bytes(value))

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the key (replacing the file); return whether it was there."""
        return await self._run(self._delete, namespace, key)

    async def keys(self, namespace: str) -> list[str]:
        """Return the keys of one namespace."""
        return await self._run(self._keys, namespace)

    async def namespaces(self) -> list[str]:
        """Return every namespace that holds a key, sorted."""
        return await self._run(self._namespaces)

    async def aclose(self) -> None:
        """Stop the worker thread; idempotent. Every write is already on disk."""
        self._closed = True
        self._open = False
        if self._worker is not None:
            await self._worker.aclose()  # after the calls queued before it

    def __repr__(self) -> str:
        return f"<FileStorage {str(self.path)!r} ({self.format})>"

    # --- worker thread ----------------------------------------------------------

    def _get(self, namespace: str, key: str) -> bytes | None:
        self._refresh()
        return self._data.get(namespace, {}).get(key)

    def _keys(self, namespace: str) -> list[str]:
        self._refresh()
        return list(self._data.get(namespace, ()))

    def _namespaces(self) -> list[str]:
        self._refresh()
        return sorted(self._data)

    def _set(self, namespace: str, key: str, value: bytes) -> None:
        self._refresh()
        data = {ns: dict(space) for ns, space in self._data.items()}
        data.setdefault(namespace, {})[key] = value
        self._write(data)

    def _delete(self, namespace: str, key: str) -> bool:
        self._refresh()
        if key not in self._data.get(namespace, {}):
            return False
        data = {ns: dict(space) for ns, space in self._data.items()}
        del data[namespace][key]
        if not data[namespace]:
            del data[namespace]
        self._write(data)
        return True

    def _refresh(self) -> None:
        """Re-read the file if another writer replaced it since we last looked."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._data, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        raw = self.path.read_bytes()
        self._data = self._decode(raw)
        self._stamp = stamp

    def _decode(self, raw: bytes) -> dict[str, dict[str, bytes]]:
        try:
            if self.format == "json":
                doc = _file_json.decode(raw)
                return {
                    ns: {k: bytes(v) for k, v in space.items()}
                    for ns, space in doc.items()
                }
            return _file_msgpack.decode(raw)
        except msgspec.DecodeError as exc:
            msg = f"{self.path}: not a {self.format} store file: {exc}"
            raise DecodeError(msg) from exc

    def _encode(self, data: dict[str, dict[str, bytes]]) -> bytes:
        if self.format == "json":
            doc = {
                ns: {k: msgspec.Raw(v) for k, v in space.items()}
                for ns, space in data.items()
            }
            return msgspec.json.encode(doc)
        return msgspec.msgpack.encode(data)

    def _write(self, data: dict[str, dict[str, bytes]]) -> None:
        payload = self._encode(data)
        # The temporary file sits beside the target: os.replace is atomic
        # only within one file system.
        tmp = self.path.with_name(
            f".{self.path.name}.{os.getpid()}-{next(_tmp_counter)}.tmp"
        )
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_dir(self.path.parent)
        st = os.stat(self.path)
        self._data = data
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@final
class SQLiteStorage(_Closable):
    """Values in one table of an SQLite database (WAL journal).

    Args:
        path: The database file (created if missing); ``":memory:"`` for a
            private in-memory database.
        table: The table to use (created if missing).
        busy_timeout_ms: How long a write waits for another process's lock.
        synchronous: ``"normal"`` (a commit survives a crash of the process,
            not always a power loss) or ``"full"`` (every commit is durable).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "flowstream_store",
        busy_timeout_ms: int = 5000,
        synchronous: Literal["normal", "full"] = "normal",
    ) -> None:
        if not table.replace("_", "").isalnum():
            msg = (
                f"table must be a plain identifier (letters, digits, _), got {table!r}"
            )
            raise ValueError(msg)
        if synchronous not in ("normal", "full"):
            msg = f"synchronous must be 'normal' or 'full', got {synchronous!r}"
            raise ValueError(msg)
        self.path = str(path)
        self.table = table
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.synchronous = synchronous
        # Its connection is the worker's, made and used on its thread.
        self._worker: SQLiteWorker | None = None
        self._closed = False

    def _run(self, fn: Callable[..., T], *args: Any) -> Coroutine[Any, Any, T]:
        if self._closed:
            msg = f"{self!r} is closed"
            raise RuntimeError(msg)
        if self._worker is None:
            self._worker = SQLiteWorker("flowstream-sqlite-storage")
            self._open = True
        return self._worker.run(fn, *args)

    def _connection(self) -> sqlite3.Connection:
        worker = self._worker
        assert worker is not None  # called on the worker's thread
        if worker.conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self.table} ("
                    "namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
                    "PRIMARY KEY (namespace, key)) WITHOUT ROWID"
                )
            except BaseException:
                conn.close()
                raise
            worker.conn = conn
        return worker.conn

    async def get(self, namespace: str, key: str) -> bytes | None:
        """Return the bytes under the key, or None."""

        def get() -> bytes | None:
            row = (
                self._connection()
                .execute(
                    f"SELECT value FROM {self.table} WHERE namespace = ? AND key = ?",
                    (namespace, key),
                )
                .fetchone()
            )
            return None if row is None else bytes(row[0])

        return await self._run(get)

    async def set(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` under the key (one committed upsert)."""

        def upsert() -> None:
            self._connection().execute(
                f"INSERT INTO {self.table} (namespace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, bytes(value)),
            )

        await self._run(upsert)

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove the key; return whether it was there."""

        def delete() -> bool:
            cursor = self._connection().execute(
                f"DELETE FROM {self.table} WHERE namespace = ? AND key = ?",
                (namespace, key),
            )
            return cursor.rowcount > 0

        return await self._run(delete)

    async def keys(self, namespace: str) -> list[str]:
        """Return the keys of one namespace."""

        def keys() -> list[str]:
            rows = self._connection().execute(
                f"SELECT key FROM {self.table} WHERE namespace = ?", (namespace,)
            )
            return [row[0] for row in rows]

        return await self._run(keys)

    async def namespaces(self) -> list[str]:
        """Return every namespace that holds a key, sorted."""

        def namespaces() -> list[str]:
            rows = self._connection().execute(
                f"SELECT DISTINCT namespace FROM {self.table} ORDER BY namespace"
            )
            return [row[0] for row in rows]

        return await self._run(namespaces)

    async def aclose(self) -> None:
        """Close the connection on its thread, then stop the thread; idempotent."""
        self._closed = True
        self._open = False
        if self._worker is not None:
            await self._worker.aclose()

    def __repr__(self) -> str:
        return f"<SQLiteStorage {self.path!r} table={self.table}>"
