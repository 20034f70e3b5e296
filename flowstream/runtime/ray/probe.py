"""Recent outputs of a run on Ray: a bounded sample per output port.

`RunOptions.output_probe` is a callable in the driver; the batches that
workflow outputs collect are in the actors, and reach the driver only with
the slots' results at the end. So each actor that is asked to keeps, per
output port, the latest records collected (`OutputSample`: at most
`SAMPLE_RECORDS` of them, as references to the batches' items), and the
driver, each time it polls the slots' counters, takes what is new
(`OutputSample.drain`: encoded, at most `SAMPLE_BYTES` per port) and calls
the probe with it (`poll_samples`). Never every record: between two polls a
port sends at most its latest `SAMPLE_RECORDS`, whatever it collected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import ray

from ...core.codec import decode_msgpack, encode_msgpack
from ...errors import EncodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["SAMPLE_BYTES", "SAMPLE_RECORDS", "OutputSample", "poll_samples"]

SAMPLE_RECORDS: Final = 50
"""Records per output port and poll (the server's recent outputs keep 50)."""
SAMPLE_BYTES: Final = 64 * 1024
"""...and at most this many bytes of them (MessagePack), per port and poll."""

Sampled = list[tuple[str, str, bytes]]
"""``(declared node id, port, MessagePack list of records)``, per port."""


class OutputSample:
    """The latest records each workflow output of one slot collected.

    `take` fits `RunOptions.output_probe` in the actor's executor: it keeps
    references to the last `SAMPLE_RECORDS` items of each batch (a bounded
    deque per port, so its cost per batch is bounded); `drain` encodes them
    for the driver and forgets them.
    """

    def __init__(self) -> None:
        self._ports: dict[tuple[str, str], deque[Any]] = {}

    def take(self, node_id: str, port: str, batch: list[Any]) -> None:
        """Keep the latest records of a batch ``node_id`` collected on ``port``."""
        ring = self._ports.get((node_id, port))
        if ring is None:
            ring = self._ports[(node_id, port)] = deque(maxlen=SAMPLE_RECORDS)
        ring.extend(batch[-SAMPLE_RECORDS:])

    def drain(self) -> Sampled:
        """What each port collected since the last drain (newest kept), encoded.

        The newest records that fit in `SAMPLE_BYTES` go; a record that
        cannot be encoded goes as its ``repr``, one over the bound as a
        note of its size.
        """
        found: Sampled = []
        for (node_id, port), ring in self._ports.items():
            if not ring:
                continue
            kept: list[bytes] = []
            size = 0
            while ring:
                raw = _encoded(ring.pop())
                if size + len(raw) > SAMPLE_BYTES:
                    if kept:
                        break
                    raw = encode_msgpack(f"(a record of {len(raw)} bytes, not shown)")
                kept.append(raw)
                size += len(raw)
            ring.clear()
            kept.reverse()
            found.append((node_id, port, _array(kept)))
        return found


def _encoded(item: Any) -> bytes:
    try:
        return encode_msgpack(item)
    except EncodeError:
        return encode_msgpack(repr(item)[:4096])


def _array(items: list[bytes]) -> bytes:
    """A MessagePack array of already-encoded items."""
    n = len(items)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(items)


async def poll_samples(
    actors: Sequence[Any], probe: Callable[[str, str, list[Any]], None]
) -> None:
    """Take every slot's new sample and call ``probe`` with each port's."""
    with contextlib.suppress(ray.exceptions.RayError):
        parts: list[Sampled] = await asyncio.gather(
            *(a.sample_outputs.remote() for a in actors)
        )
        for part in parts:
            for node_id, port, payload in part:
                probe(node_id, port, decode_msgpack(payload))
