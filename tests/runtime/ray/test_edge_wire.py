"""The wire of an edge between processes: `Listener` and the frames it reads.

Real TCP on 127.0.0.1 (no Ray: the actors only start a `Listener` and hand
its address over). A connection must present the run's token; frames reach
the inbox in order and are acknowledged once taken; a barrier starts its
epoch as soon as it arrives, ahead of the batches before it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from flowstream.core.codec import decode_msgpack, encode_msgpack
from flowstream.runtime.checkpointing.coordinator import Barrier
from flowstream.runtime.ray import edges
from flowstream.runtime.ray.edges import (
    ACK,
    BARRIER,
    BATCH,
    END,
    FRAME,
    HELLO,
    Inbox,
    Listener,
    open_inbox,
)

if TYPE_CHECKING:
    from collections.abc import Callable

TOKEN = b"t" * 16


def frame(kind: int, payload: bytes = b"", epoch: int = 0) -> bytes:
    return FRAME.pack(kind, epoch, len(payload)) + payload


async def started(
    inboxes: dict[int, Inbox], on_barrier: Callable[[int], None] = print
) -> tuple[Listener, str, int]:
    listener = Listener(TOKEN, inboxes, on_barrier)
    host, port = await listener.start("127.0.0.1")
    return listener, host, port


async def test_batches_arrive_in_order_and_each_is_acknowledged_once_taken() -> None:
    inbox = open_inbox()
    listener, host, port = await started({3: inbox})
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(HELLO.pack(TOKEN, 3))
    for i in range(3):
        writer.write(frame(BATCH, encode_msgpack([i, i + 1])))
    writer.write(frame(END))
    await writer.drain()
    payloads = [await inbox.get() for _ in range(3)]
    assert [decode_msgpack(p) for p in payloads if isinstance(p, bytes)] == [
        [0, 1],
        [1, 2],
        [2, 3],
    ]
    assert await inbox.get() is None  # the end, after the batches
    assert await reader.readexactly(4) == ACK * 4
    assert await reader.read() == b""  # then the receiver closes
    writer.close()
    await listener.aclose()


async def test_an_ack_waits_until_the_receiving_node_takes_the_batch() -> None:
    inbox = open_inbox()  # holds one batch
    listener, host, port = await started({0: inbox})
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(HELLO.pack(TOKEN, 0) + frame(BATCH, b"\x90") + frame(BATCH, b"\x90"))
    assert await reader.readexactly(1) == ACK  # the first is in the queue
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await reader.readexactly(1)  # the second waits for room
    await inbox.get()
    assert await reader.readexactly(1) == ACK
    writer.close()
    await listener.aclose()


async def test_a_barrier_starts_its_epoch_before_the_batches_ahead_are_taken() -> None:
    inbox = open_inbox()
    barriers: list[int] = []
    came = asyncio.Event()

    def on_barrier(epoch: int) -> None:
        barriers.append(epoch)
        came.set()

    listener, host, port = await started({0: inbox}, on_barrier)
    _, writer = await asyncio.open_connection(host, port)
    writer.write(HELLO.pack(TOKEN, 0))
    for _ in range(3):  # one fits the queue, two wait
        writer.write(frame(BATCH, b"\x90"))
    writer.write(frame(BARRIER, epoch=7))
    await writer.drain()
    async with asyncio.timeout(5):
        await came.wait()
    assert barriers == [7]
    kinds = [await inbox.get() for _ in range(4)]
    assert kinds[:3] == [b"\x90"] * 3
    assert isinstance(kinds[3], Barrier)  # in its place among the batches
    assert kinds[3].epoch == 7
    writer.close()
    await listener.aclose()


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        (HELLO.pack(b"x" * 16, 0), "a wrong token"),
        (HELLO.pack(TOKEN, 9), "an edge not received here"),
    ],
)
async def test_a_connection_without_the_token_or_edge_is_closed_unread(
    hello: bytes, why: str
) -> None:
    inbox = open_inbox()
    listener, host, port = await started({0: inbox})
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(hello + frame(BATCH, b"\x90"))
    await writer.drain()
    assert await reader.read() == b"", why
    assert inbox.empty(), why
    writer.close()
    await listener.aclose()


async def test_a_second_connection_for_an_edge_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, other = open_inbox(), open_inbox()
    listener, host, port = await started({0: inbox, 1: other})
    _, first = await asyncio.open_connection(host, port)
    first.write(HELLO.pack(TOKEN, 0))
    await first.drain()
    reader, second = await asyncio.open_connection(host, port)
    second.write(HELLO.pack(TOKEN, 0) + frame(BATCH, b"\x90"))
    await second.drain()
    assert await reader.read() == b""
    assert inbox.empty()
    first.close()
    second.close()
    await listener.aclose()


async def test_a_silent_connection_is_closed_after_the_hello_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edges, "HELLO_TIMEOUT_S", 0.1)
    listener, host, port = await started({0: open_inbox()})
    reader, writer = await asyncio.open_connection(host, port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    await listener.aclose()


async def test_once_every_edge_is_connected_no_more_connections_are_taken() -> None:
    listener, host, port = await started({0: open_inbox()})
    _, writer = await asyncio.open_connection(host, port)
    writer.write(HELLO.pack(TOKEN, 0))
    await writer.drain()
    assert listener.server is not None
    for _ in range(500):
        if not listener.server.is_serving():
            break
        await asyncio.sleep(0.01)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, port)
    writer.close()
    await listener.aclose()
