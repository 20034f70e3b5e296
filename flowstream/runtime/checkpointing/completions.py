"""DAG completions recorded for a store elsewhere (one process of many).

A checkpointed DAG run records each one-shot node's outputs as it completes,
so that a killed or failed run resumes without calling it again
(`store.CheckpointStore.record`). When the run is spread over processes (the
Ray backend), only the driver opens the store: each process's executor
records into a `DelegatedCompletions` instead, and the driver takes what it
holds (`DelegatedCompletions.taken`, a long poll) and records it in the
store, committed every ``interval_ms`` as locally. So the guarantee is the
local one: at most the completions of the last interval are computed again.

Pure asyncio, no Ray: the driver talks to it through whatever carries calls
between its processes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

import msgspec

__all__ = [
    "CompletionRecorder",
    "DelegatedCompletions",
    "RecordsUnder",
    "decode_outputs",
    "encode_outputs",
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[str, list[Any]])


def encode_outputs(outputs: dict[str, list[Any]]) -> bytes:
    """A node's outputs (per port) as MessagePack; TypeError if they cannot be."""
    try:
        return _encoder.encode(outputs)
    except OverflowError as exc:
        raise TypeError(str(exc)) from None


def decode_outputs(blob: bytes) -> dict[str, list[Any]]:
    """A node's outputs from `encode_outputs`."""
    return _decoder.decode(blob)


class CompletionRecorder(Protocol):
    """Where a DAG run's executor records completed one-shot nodes."""

    def record(self, run_key: str, node_id: str, outputs: dict[str, list[Any]]) -> None:
        """Queue ``node_id``'s outputs (per port)."""
        ...

    async def maybe_commit(self) -> None:
        """Make what is queued durable if it is time to."""
        ...


class DelegatedCompletions:
    """This process's completions, waiting for the driver to take them.

    Outputs that cannot be encoded (a Stream, an object) are not kept (their
    node is computed again on resume) and their nodes listed in
    ``unstorable``, as the store does.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._ended = False
        self.unstorable: list[str] = []

    def record(self, run_key: str, node_id: str, outputs: dict[str, list[Any]]) -> None:
        """Queue ``node_id``'s outputs for the driver (``run_key`` is its)."""
        try:
            blob = encode_outputs(outputs)
        except TypeError:
            self.unstorable.append(node_id)
            return
        self._pending.append((node_id, blob))
        self._wake.set()

    async def maybe_commit(self) -> None:
        """Let the driver's waiting `taken` return (it commits on its interval).

        A DAG of plain calls would otherwise run to its end without yielding
        to the loop, and nothing would reach the driver before then.
        """
        if self._pending:
            await asyncio.sleep(0)

    def ended(self) -> None:
        """The run is over: `taken` hands over the rest, then None."""
        self._ended = True
        self._wake.set()

    async def taken(self) -> list[tuple[str, bytes]] | None:
        """Wait for completions; return them (node id, outputs) and forget them.

        None once the run has ended and everything was taken.
        """
        while not self._pending and not self._ended:
            self._wake.clear()
            await self._wake.wait()
        if not self._pending:
            return None
        taken, self._pending = self._pending, []
        return taken


@runtime_checkable
class RecordsUnder(Protocol):
    """An executor that can record DAG completions for a store elsewhere."""

    def record_under(
        self, recorder: CompletionRecorder, done: dict[str, dict[str, list[Any]]]
    ) -> None:
        """Record into ``recorder``; ``done`` are the nodes completed before."""
        ...
