"""The ``file.sink`` node: records appended to a JSON Lines or CSV file.

Its config, `FileSink` (one write per batch on a
`connectors.files._common._Descriptor`, fsync at the end, truncation back to
the last checkpoint on recovery) and the `file_sink` spec.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import io
import os
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from flowstream import FilePath, node

from ._common import (
    FileFormat,
    _check_csv_options,
    _check_path,
    _Descriptor,
    _format_of,
    _last_byte,
    _read_head,
    _sync_and_size,
    _truncate,
    _write_all,
)
from ._formats import _cell, encode_json_lines

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from flowstream import NodeContext

    from ._formats import Rejected

__all__ = ["FileSink", "FileSinkConfig", "file_sink"]


class FileSinkConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Config of ``file.sink``.

    Attributes:
        path: The file to append to (created if missing).
        format: ``jsonl`` or ``csv``; by default ``csv`` for a ``.csv`` path,
            else ``jsonl``.
        commit: ``append``: records are appended after what the file holds;
            under stream checkpoints, a restart first truncates the file back
            to the size it had at the last committed checkpoint.
        fsync: When data is forced to disk: ``end`` (end of input and
            shutdown, and at each checkpoint), ``batch`` (after every batch
            too), or ``never`` (then a checkpoint survives a crash of the
            process, not a power loss).
        fields: CSV columns; by default an existing file's header, else the
            first record's fields.
        header: Write a CSV header line into an empty file.
        delimiter: The CSV field separator.
    """

    path: FilePath
    format: FileFormat | None = None
    commit: Literal["append"] = "append"
    fsync: Literal["end", "batch", "never"] = "end"
    fields: list[str] | None = None
    header: bool = True
    delimiter: str = ","

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_csv_options(self.kind, self.fields, self.delimiter)

    @property
    def kind(self) -> FileFormat:
        """The format, given or inferred from the path."""
        return _format_of(self.path, self.format)


class FileSink:
    """Append records to a JSON Lines or CSV file; flush and fsync at the end.

    Each batch is encoded and written with one ``write`` (so readers see
    whole lines), and the file is fsynced at end of input and at shutdown
    (``fsync: batch`` for every batch). An item that cannot be written (no
    JSON form; for CSV not a mapping, or with fields outside the columns)
    goes to the ``error`` port. A file whose last line lacks a line break
    (a crashed writer) gets one before the first record, so records never
    merge with a partial line.

    CSV columns come from ``fields``, else the existing file's header, else
    the first record; missing fields are empty cells, lists and dicts are
    JSON text, booleans ``true``/``false``.

    Stream-safe. Delivery: exactly-once effects under stream checkpoints,
    across crashes and ``kill -9``: at each checkpoint barrier the file is
    fsynced and its size kept in the checkpoint (``offset``); a restart
    truncates the file back to that size, dropping what the uncommitted epoch
    wrote, before the sources replay it. A file found shorter than that size
    was changed outside the run: the node fails to start, naming it. Readers
    of the file may see the records of an epoch not committed yet, which a
    recovery removes. Without checkpoints: at-least-once (a rerun appends
    again). State: ``offset`` (end of what this node wrote), ``records``,
    ``fields`` (CSV columns, under checkpoints).

    Example:
        ``{id: out, type: file.sink, config: {path: out.csv}}`` appends each
        record as a CSV row, with a header line if the file was empty.
    """

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self._fd: _Descriptor | None = None
        self._fields: list[str] | None = config.fields
        self._header_due = False
        self._needs_newline = False
        self._dirty = False

    async def __aenter__(self) -> FileSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def initialize(self, ctx: NodeContext) -> None:
        """Open the file for appending; read an existing CSV header.

        Under checkpoints, first truncate the file to the restored ``offset``.

        Raises:
            ValueError: The file is shorter than the restored ``offset``.
        """
        cfg = self.config
        loop = asyncio.get_running_loop()
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = await loop.run_in_executor(None, os.open, cfg.path, flags, 0o666)
        self._fd = _Descriptor(fd)
        size: int = await self._fd.call(os.lseek, 0, os.SEEK_END)
        committed: int | None = ctx.state.get("offset") if ctx.checkpointing else None
        if committed is not None:
            await self._roll_back(ctx, size, committed)
            size = committed
            if cfg.fields is None and ctx.state.get("fields"):
                self._fields = list(ctx.state["fields"])
        ctx.state["offset"] = size
        if "records" not in ctx.state:
            ctx.state["records"] = 0
        if ctx.checkpointing:
            ctx.on_barrier(functools.partial(self._at_barrier, ctx))
        self._header_due = cfg.kind == "csv" and cfg.header and size == 0
        if size:
            last = await self._fd.call(_last_byte)
            self._needs_newline = last != b"\n"
            if cfg.kind == "csv" and self._fields is None:
                head = await self._fd.call(_read_head, 1 << 20)
                text = head.decode("utf-8", "replace").rstrip("\r")
                row = next(csv.reader([text], delimiter=cfg.delimiter))
                self._fields = row or None

    async def _roll_back(self, ctx: NodeContext, size: int, committed: int) -> None:
        """Cut what an epoch that never committed wrote (it will be replayed)."""
        assert self._fd is not None
        path = self.config.path
        if size < committed:
            await self.aclose()  # a node that fails to start gets no shutdown
            msg = (
                f"{path} holds {size} bytes, fewer than the {committed} this sink "
                f"had written at the last checkpoint (epoch {ctx.restored_epoch}): "
                f"it was changed outside the run; restore it, or start afresh "
                f"with a new checkpoint store"
            )
            raise ValueError(msg)
        if size > committed:
            sync = self.config.fsync != "never"
            await self._fd.call(_truncate, committed, sync)
            ctx.logger.info(
                "%s: truncated %d bytes written after checkpoint %d",
                path,
                size - committed,
                ctx.restored_epoch,
            )

    async def _at_barrier(self, ctx: NodeContext, epoch: int) -> None:
        # Every batch before the barrier is written (os.write, no user-space
        # buffer): make it durable and note the size the epoch keeps.
        if self._fd is None:
            return
        sync = self._dirty and self.config.fsync != "never"
        if sync:
            self._dirty = False
        ctx.state["offset"] = await self._fd.call(_sync_and_size, sync)
        if self._fields is not None:
            ctx.state["fields"] = list(self._fields)

    async def execute(
        self, inp: AsyncIterator[list[Any]], *, ctx: NodeContext
    ) -> AsyncIterator[list[Any]]:
        """Write each batch with one write; fsync at end of input."""
        cfg = self.config
        async for batch in inp:
            if cfg.kind == "csv":
                data, count, rejected = self._encode_csv(batch)
            else:
                data, count, rejected = encode_json_lines(batch)
            if data:
                await self._write(data, count, ctx)
                if cfg.fsync == "batch":
                    await self.flush()
            if rejected:
                for item, reason in rejected:
                    ctx.dead_letter(item, reason)
                yield []  # lets the runtime hand the dead letters on now
        await self.flush()

    async def _write(self, data: bytes, count: int, ctx: NodeContext) -> None:
        assert self._fd is not None, "initialize was not called"
        if self._needs_newline:
            data = b"\n" + data
            self._needs_newline = False
        self._dirty = True
        await self._fd.call(_write_all, data)
        ctx.state["offset"] += len(data)
        ctx.state["records"] += count

    async def flush(self) -> None:
        """Force what was written to disk (a no-op when nothing is pending)."""
        if self._fd is None or not self._dirty or self.config.fsync == "never":
            return
        self._dirty = False
        await self._fd.call(os.fsync)

    async def shutdown(self) -> None:
        """Fsync what is pending and close the file."""
        await self.aclose()

    async def aclose(self) -> None:
        """Fsync what is pending and close the file; idempotent."""
        if self._fd is None:
            return
        try:
            await self.flush()
        finally:
            fd, self._fd = self._fd, None
            await fd.aclose()

    def _encode_csv(self, batch: list[Any]) -> tuple[bytes, int, Rejected]:
        cfg = self.config
        out = io.StringIO()
        writer = csv.writer(out, delimiter=cfg.delimiter, lineterminator="\n")
        count = 0
        rejected: Rejected = []
        for item in batch:
            if not isinstance(item, dict):
                kind = type(item).__name__
                rejected.append((item, f"a CSV row needs a record, got {kind}"))
                continue
            if self._fields is None:
                self._fields = [str(k) for k in item]
            if self._header_due:
                writer.writerow(self._fields)
                self._header_due = False
            extra = [str(k) for k in item if k not in self._fields]
            if extra:
                names = ", ".join(extra)
                rejected.append((item, f"fields not among the CSV columns: {names}"))
                continue
            writer.writerow([_cell(item.get(f)) for f in self._fields])
            count += 1
        return out.getvalue().encode(), count, rejected


file_sink = node("file.sink", config=FileSinkConfig, batched=True)(FileSink)
