"""``ws.source``'s intake: the bounded queue from connection readers to the node.

Also the size of the batches the node hands on (`BATCH`, `BATCH_BYTES`).
"""

from __future__ import annotations

import asyncio
from collections import deque

from .._records import BadRecord

# A frame on its way to the graph, with its sender and its journal id (0:
# not journaled); or, instead of the frame, why a frame could not be read.
_Entry = tuple[bytes | str | BadRecord, str, int]

BATCH = 256
"""Records per batch the source aims for (it never waits to fill one).

Smaller than the engine's usual 1024: records are decoded just before they are
handed on, and a batch that stays small stays in the CPU caches and below the
garbage collector's first threshold (measured: +10% records/s over 1024).
"""

BATCH_BYTES = 256 << 10
"""Frame bytes after which a batch leaves even if it has fewer records.

The graph's channels are bounded in batches: without this, a batch of 256
large frames' records (256 MB of 1 MB frames) would be one item there.
"""


class _Intake:
    """The bounded FIFO of frames from connection readers to the source node.

    Bounded in frames and in bytes: `put` waits while the queue is full, and
    that wait is what stops a reader from reading its socket. A frame enters
    if it fits, or if the queue is empty (a frame larger than ``max_bytes``
    passes, alone). One consumer (the source node) pops ``_entries`` itself,
    keeping ``bytes`` and waking ``_space`` if readers wait, and calls `wait`
    for more. `close` means no more frames: what is queued can still be
    popped, then `wait` returns False; later puts are refused.
    """

    __slots__ = (
        "_data",
        "_entries",
        "_space",
        "bytes",
        "closed",
        "max_bytes",
        "max_frames",
        "peak_bytes",
        "peak_frames",
        "waiting",
    )

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.bytes = 0
        self.closed = False
        self.peak_frames = 0
        self.peak_bytes = 0
        self.waiting = 0
        self._entries: deque[_Entry] = deque()
        self._data = asyncio.Event()
        self._space = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def offer(self, entry: _Entry, size: int) -> bool:
        """Queue ``entry`` (``size`` bytes) if it fits now; False otherwise."""
        entries = self._entries
        n = len(entries)
        total = self.bytes + size
        if (n and (n >= self.max_frames or total > self.max_bytes)) or self.closed:
            return False
        entries.append(entry)
        self.bytes = total
        if total > self.peak_bytes:
            self.peak_bytes = total
        if n >= self.peak_frames:
            self.peak_frames = n + 1
        if not n:
            self._data.set()  # the consumer waits only on an empty queue
        return True

    async def put(self, entry: _Entry, size: int) -> bool:
        """Queue ``entry``, waiting for room; False (entry dropped) once closed."""
        while not self.offer(entry, size):
            if self.closed:
                return False
            self._space.clear()
            self.waiting += 1
            try:
                await self._space.wait()
            finally:
                self.waiting -= 1
        return True

    async def wait(self) -> bool:
        """Wait for an entry; False when closed and drained."""
        while not self._entries:
            if self.closed:
                return False
            self._data.clear()
            await self._data.wait()
        return True

    def close(self) -> None:
        self.closed = True
        self._data.set()
        self._space.set()
