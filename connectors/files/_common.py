"""What ``file.source`` and ``file.sink`` share: config checks and descriptors.

The format a path implies and the checks both configs run on their options;
`_Descriptor`, a raw file descriptor whose blocking calls run in worker
threads (closed only once no thread uses it), and the calls run on it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

FileFormat = Literal["jsonl", "csv"]

CLOSE_WAIT_S = 4.0
"""How long closing waits for a thread still using a descriptor."""

T = TypeVar("T")


def _format_of(path: str, given: FileFormat | None) -> FileFormat:
    if given is not None:
        return given
    return "csv" if Path(path).suffix.lower() == ".csv" else "jsonl"


def _check_path(path: str) -> None:
    if not path.strip():
        msg = "path must not be empty"
        raise ValueError(msg)


def _check_csv_options(
    kind: FileFormat, fields: list[str] | None, delimiter: str
) -> None:
    if len(delimiter) != 1 or delimiter in '\r\n"':
        msg = f"delimiter must be one character, not a quote or newline: {delimiter!r}"
        raise ValueError(msg)
    if fields is not None:
        if kind != "csv":
            msg = "fields applies to the csv format only"
            raise ValueError(msg)
        if not fields or any(not f for f in fields) or len(set(fields)) != len(fields):
            msg = f"fields must be distinct non-empty names, got {fields!r}"
            raise ValueError(msg)


# --- descriptors in threads ----------------------------------------------------


class _Descriptor:
    """A raw file descriptor whose blocking calls run in worker threads.

    Each call is shielded: cancelling the caller (an aborted run) leaves the
    thread to finish, and `aclose` waits for it before closing the
    descriptor, so a descriptor is never closed, or its number reused, under
    a running call.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._running: asyncio.Future[Any] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.run_in_executor(None, fn, self.fd, *args)
        self._running = fut
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._running = None

    async def aclose(self) -> None:
        if self.fd < 0:
            return
        running, self._running = self._running, None
        if running is not None and not running.done():
            await asyncio.wait({running}, timeout=CLOSE_WAIT_S)
        if running is not None and running.done() and not running.cancelled():
            running.exception()  # retrieved: an abandoned call's error is moot
        fd, self.fd = self.fd, -1
        os.close(fd)

    def close(self) -> None:
        # Last resort when no await is possible; see aclose.
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_head(fd: int, limit: int) -> bytes:
    """The file's first line (up to ``limit`` bytes), for an existing CSV header."""
    data = os.pread(fd, limit, 0)
    return data.split(b"\n", 1)[0]


def _sync_and_size(fd: int, sync: bool) -> int:
    if sync:
        os.fsync(fd)
    return os.fstat(fd).st_size


def _truncate(fd: int, size: int, sync: bool) -> None:
    os.ftruncate(fd, size)
    if sync:
        os.fsync(fd)


def _last_byte(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, 1, size - 1) if size else b""


def _open_for_reading(path: str) -> tuple[int, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    return fd, os.fstat(fd)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
