from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream.errors import (
    BrokenChannelError,
    ClosedChannelError,
    EndOfStream,
    WouldBlock,
)
from flowstream.runtime.channel import (
    DEFAULT_CAPACITY,
    ChannelStatistics,
    Control,
    ReceiveChannel,
    SendChannel,
    open_channel,
)

if TYPE_CHECKING:
    from collections.abc import Callable


class Mark(Control):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mark) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Mark({self.name!r})"


class Barrier(msgspec.Struct, Control, frozen=True):
    checkpoint: int


async def settle(predicate: Callable[[], bool], limit: int = 1000) -> None:
    """Yield to the loop until ``predicate()`` holds; never sleeps on a clock."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    msg = "condition never became true"
    raise AssertionError(msg)


def drain(recv: ReceiveChannel[Any]) -> list[Any]:
    out: list[Any] = []
    while True:
        try:
            out.append(recv.receive_nowait())
        except (WouldBlock, EndOfStream):
            return out


# --- opening ------------------------------------------------------------------


def test_open_channel_returns_two_halves() -> None:
    send, recv = open_channel[int](4)
    with send, recv:
        assert isinstance(send, SendChannel)
        assert isinstance(recv, ReceiveChannel)
        assert send.statistics() == recv.statistics()
        assert send.statistics().capacity == 4


def test_unsubscripted_form_works() -> None:
    pair: tuple[SendChannel[str], ReceiveChannel[str]] = open_channel(1)
    send, recv = pair
    with send, recv:
        send.send_nowait(["a"])
        assert recv.receive_nowait() == ["a"]


def test_default_capacity() -> None:
    assert DEFAULT_CAPACITY == 16


def test_variance_send_contravariant_receive_covariant() -> None:
    # Checked by mypy: the assignments below type-check only with this variance.
    objects_send, objects_recv = open_channel[object](1)
    bools_send, bools_recv = open_channel[bool](1)
    with objects_send, objects_recv, bools_send, bools_recv:
        takes_ints: SendChannel[int] = objects_send
        gives_ints: ReceiveChannel[int] = bools_recv
        takes_ints.send_nowait([1])
        bools_send.send_nowait([True])
        assert objects_recv.receive_nowait() == [1]
        assert gives_ints.receive_nowait() == [True]


@pytest.mark.parametrize("bad", [-1, 1.5, 2.0, True, False, "3", None])
def test_capacity_must_be_an_int_at_least_zero(bad: Any) -> None:
    with pytest.raises(ValueError, match="capacity") as info:
        open_channel(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("cls", [SendChannel, ReceiveChannel])
def test_halves_have_no_public_constructor(cls: Any) -> None:
    with pytest.raises(TypeError, match="open_channel"):
        cls()


# --- data path ----------------------------------------------------------------


async def test_batches_arrive_in_order_as_the_same_objects() -> None:
    send, recv = open_channel[int](8)
    batches = [[1, 2], [3], [4, 5, 6]]
    with send, recv:
        for batch in batches:
            await send.send(batch)
        send.close()
        received = [await recv.receive() for _ in batches]
        assert received == batches
        assert all(r is b for r, b in zip(received, batches, strict=True))
        with pytest.raises(EndOfStream):
            await recv.receive()


async def test_empty_batch_is_not_sent_even_on_a_full_channel() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        send.send_nowait([1])
        await send.send([])  # returns although the channel is full
        send.send_nowait([])
        assert send.statistics().buffered == 1
        assert recv.receive_nowait() == [1]
        with pytest.raises(WouldBlock):
            recv.receive_nowait()


async def test_nowait_variants_raise_would_block() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        with pytest.raises(WouldBlock):
            recv.receive_nowait()
        send.send_nowait([1])
        with pytest.raises(WouldBlock):
            send.send_nowait([2])
        assert recv.receive_nowait() == [1]


async def test_sender_waits_while_full_and_resumes_when_there_is_room() -> None:
    send, recv = open_channel[int](2)
    done: list[int] = []

    async def producer() -> None:
        for i in range(3):
            await send.send([i])
            done.append(i)

    with send, recv:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer())
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            stats = send.statistics()
            assert stats.buffered == 2
            assert done == [0, 1]
            assert recv.receive_nowait() == [0]
            await settle(lambda: done == [0, 1, 2])
        assert drain(recv) == [[1], [2]]


async def test_blocked_senders_are_served_in_fifo_order() -> None:
    send, recv = open_channel[str](1)
    with send, recv:
        send.send_nowait(["first"])
        async with asyncio.TaskGroup() as tg:
            for name in ["a", "b", "c"]:
                tg.create_task(send.send([name]))
                await settle(lambda: True)  # let it block before the next one
            await settle(lambda: send.statistics().tasks_waiting_send == 3)
            # a newcomer does not jump the queue, even once a slot is free
            received = [recv.receive_nowait()]
            with pytest.raises(WouldBlock):
                send.send_nowait(["newcomer"])
            while len(received) < 4:
                received.append(await recv.receive())
        assert received == [["first"], ["a"], ["b"], ["c"]]


async def test_blocked_receivers_are_served_in_fifo_order() -> None:
    send, recv = open_channel[str](4)
    got: dict[str, list[str] | Control] = {}

    async def receiver(name: str) -> None:
        got[name] = await recv.receive()

    with send, recv:
        async with asyncio.TaskGroup() as tg:
            for name in ["r1", "r2", "r3"]:
                tg.create_task(receiver(name))
                await settle(lambda: True)
            await settle(lambda: recv.statistics().tasks_waiting_receive == 3)
            for item in ["x", "y", "z"]:
                send.send_nowait([item])
            # handed straight to the waiting receivers, never buffered
            assert send.statistics().buffered == 0
    assert got == {"r1": ["x"], "r2": ["y"], "r3": ["z"]}


async def test_rendezvous_send_completes_only_when_a_receiver_takes_it() -> None:
    send, recv = open_channel[int](0)
    finished: list[int] = []

    async def producer() -> None:
        for i in range(2):
            await send.send([i])
            finished.append(i)

    with send, recv:
        with pytest.raises(WouldBlock):
            send.send_nowait([9])
        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer())
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            assert finished == []
            # a batch moves only to a task waiting in receive()
            with pytest.raises(WouldBlock):
                recv.receive_nowait()
            assert await recv.receive() == [0]
            assert await recv.receive() == [1]
            await settle(lambda: finished == [0, 1])
        assert send.statistics().peak_buffered == 0


async def test_rendezvous_send_nowait_hands_to_a_waiting_receiver() -> None:
    send, recv = open_channel[int](0)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.send_nowait([7])
            assert send.statistics().buffered == 0
        assert task.result() == [7]


# --- closing ------------------------------------------------------------------


async def test_receivers_drain_then_get_end_of_stream() -> None:
    send, recv = open_channel[int](4)
    with recv:
        with send:
            await send.send([1])
            await send.send([2])
        assert await recv.receive() == [1]
        assert recv.receive_nowait() == [2]
        for _ in range(2):  # end-of-stream is sticky
            with pytest.raises(EndOfStream):
                await recv.receive()
            with pytest.raises(EndOfStream):
                recv.receive_nowait()


async def test_waiting_receiver_gets_end_of_stream_on_last_close() -> None:
    send, recv = open_channel[int](4)

    async def receiver() -> None:
        with pytest.raises(EndOfStream):
            await recv.receive()

    with recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(receiver())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.close()
        assert task.result() is None
        assert recv.statistics().tasks_waiting_receive == 0


async def test_async_iteration_ends_at_end_of_stream() -> None:
    send, recv = open_channel[int](2)
    received: list[list[int] | Control] = []

    async def producer() -> None:
        with send:
            for i in range(5):
                await send.send([i, i])

    with recv:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(producer())
            async for msg in recv:
                received.append(msg)
    assert received == [[i, i] for i in range(5)]


async def test_senders_get_broken_channel_when_receivers_are_gone() -> None:
    send, recv = open_channel[int](1)
    with send:
        send.send_nowait([1])

        async def blocked() -> None:
            with pytest.raises(BrokenChannelError, match="receive half"):
                await send.send([2])

        async with asyncio.TaskGroup() as tg:
            tg.create_task(blocked())
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            recv.close()
        stats = send.statistics()
        assert stats.buffered == stats.buffered_items == 0  # discarded
        assert stats.tasks_waiting_send == 0
        with pytest.raises(BrokenChannelError):
            await send.send([3])
        with pytest.raises(BrokenChannelError):
            send.send_nowait([3])
        with pytest.raises(BrokenChannelError):
            send.send_control(Mark("m"))
        clone = send.clone()  # the half is still open, just useless
        clone.close()


async def test_using_a_closed_half_raises_closed_channel_error() -> None:
    send, recv = open_channel[int](1)
    send.close()
    recv.close()
    send.close()  # idempotent
    recv.close()
    with pytest.raises(ClosedChannelError):
        await send.send([1])
    with pytest.raises(ClosedChannelError):
        send.send_nowait([1])
    with pytest.raises(ClosedChannelError):
        send.send_nowait([])
    with pytest.raises(ClosedChannelError):
        send.send_control(Mark("m"))
    with pytest.raises(ClosedChannelError):
        await recv.receive()
    with pytest.raises(ClosedChannelError):
        recv.receive_nowait()
    with pytest.raises(ClosedChannelError):
        await anext(recv)
    with pytest.raises(ClosedChannelError):
        send.clone()
    with pytest.raises(ClosedChannelError):
        recv.clone()
    stats = send.statistics()
    assert (stats.open_send_channels, stats.open_receive_channels) == (0, 0)


async def test_closed_error_wins_over_broken() -> None:
    send, recv = open_channel[int](1)
    recv.close()
    send.close()
    with pytest.raises(ClosedChannelError):
        send.send_nowait([1])


async def test_closing_a_half_wakes_its_own_blocked_tasks() -> None:
    send, recv = open_channel[int](1)
    other = send.clone()
    send.send_nowait([1])

    async def blocked_send() -> None:
        with pytest.raises(ClosedChannelError):
            await send.send([2])

    async def blocked_other() -> None:
        await other.send([3])

    with recv, other:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(blocked_send())
            tg.create_task(blocked_other())
            await settle(lambda: recv.statistics().tasks_waiting_send == 2)
            send.close()
            await settle(lambda: recv.statistics().tasks_waiting_send == 1)
            # the closed half's batch is not delivered; the clone's is
            assert await recv.receive() == [1]
            assert await recv.receive() == [3]
        other.close()
        with pytest.raises(EndOfStream):
            recv.receive_nowait()


async def test_closing_a_receive_half_wakes_its_blocked_receivers() -> None:
    send, recv = open_channel[int](1)
    other = recv.clone()
    with send, other:

        async def blocked() -> None:
            with pytest.raises(ClosedChannelError):
                await recv.receive()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(blocked())
            other_task = tg.create_task(other.receive())
            await settle(lambda: send.statistics().tasks_waiting_receive == 2)
            recv.close()
            await settle(lambda: send.statistics().tasks_waiting_receive == 1)
            send.send_nowait([5])  # still one receiver: not broken
        assert other_task.result() == [5]


async def test_context_managers_close() -> None:
    send, recv = open_channel[int](1)
    with send as s, recv as r:
        assert s is send
        assert r is recv
    with pytest.raises(ClosedChannelError):
        send.send_nowait([1])
    with pytest.raises(ClosedChannelError):
        recv.receive_nowait()


# --- clones -------------------------------------------------------------------


async def test_fan_in_ends_only_when_every_send_clone_is_closed() -> None:
    send, recv = open_channel[str](4)
    second = send.clone()
    with recv:
        assert recv.statistics().open_send_channels == 2
        send.send_nowait(["a"])
        send.close()
        second.send_nowait(["b"])
        assert drain(recv) == [["a"], ["b"]]
        with pytest.raises(WouldBlock):
            recv.receive_nowait()  # not the end: `second` is open
        second.close()
        with pytest.raises(EndOfStream):
            recv.receive_nowait()
        assert recv.statistics().open_send_channels == 0


async def test_receive_clones_share_the_work() -> None:
    send, recv = open_channel[int](2)
    clone = recv.clone()
    assert send.statistics().open_receive_channels == 2
    got: dict[str, list[int]] = {"a": [], "b": []}

    async def consumer(name: str, half: ReceiveChannel[int]) -> None:
        with half:
            async for msg in half:
                assert isinstance(msg, list)
                got[name].extend(msg)
                await asyncio.sleep(0)

    async def producer() -> None:
        with send:
            for i in range(100):
                await send.send([i])

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consumer("a", recv))
        tg.create_task(consumer("b", clone))
        tg.create_task(producer())
    assert sorted(got["a"] + got["b"]) == list(range(100))
    assert got["a"]
    assert got["b"]
    assert got["a"] == sorted(got["a"])
    assert got["b"] == sorted(got["b"])


# --- errors and control messages in-band ---------------------------------------


async def test_error_is_delivered_after_the_buffered_batches() -> None:
    send, recv = open_channel[int](4)
    other = send.clone()
    error = RuntimeError("producer failed")
    with recv, other:
        send.send_nowait([1])
        send.send_nowait([2])
        send.close(error=error)
        send.close(error=ValueError("ignored"))  # idempotent
        # the stream failed: the other producer can no longer send
        with pytest.raises(BrokenChannelError, match="with an error") as info:
            other.send_nowait([3])
        assert info.value.__cause__ is error
        assert recv.receive_nowait() == [1]
        assert await recv.receive() == [2]
        with pytest.raises(RuntimeError) as raised:
            await recv.receive()
        assert raised.value is error
        with pytest.raises(EndOfStream):
            await recv.receive()
        with pytest.raises(EndOfStream):
            recv.receive_nowait()


async def test_error_reaches_a_waiting_receiver_and_ends_the_others() -> None:
    send, recv = open_channel[int](4)
    clone = recv.clone()
    error = ValueError("bad")
    outcomes: list[BaseException | None] = []

    async def receiver(half: ReceiveChannel[int]) -> None:
        try:
            await half.receive()
        except (ValueError, EndOfStream) as exc:
            outcomes.append(exc)

    with recv, clone:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(receiver(recv))
            tg.create_task(receiver(clone))
            await settle(lambda: recv.statistics().tasks_waiting_receive == 2)
            send.close(error)
    assert outcomes[0] is error
    assert isinstance(outcomes[1], EndOfStream)


async def test_error_surfaces_from_async_iteration() -> None:
    send, recv = open_channel[int](4)
    error = KeyError("k")
    seen: list[list[int] | Control] = []
    with recv:
        send.send_nowait([1])
        send.close(error=error)

        async def consume() -> None:
            async for msg in recv:
                seen.append(msg)

        with pytest.raises(KeyError) as raised:
            await consume()
        assert raised.value is error
        assert seen == [[1]]
        assert [msg async for msg in recv] == []


async def test_error_is_dropped_when_nobody_listens() -> None:
    send, recv = open_channel[int](1)
    recv.close()
    send.close(error=RuntimeError("lost"))
    assert send.statistics().open_send_channels == 0


async def test_close_rejects_a_non_exception_error() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        with pytest.raises(TypeError, match="Exception"):
            send.close(error=asyncio.CancelledError())  # type: ignore[arg-type]
        send.send_nowait([1])  # still open


async def test_control_messages_keep_order_and_skip_capacity() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        send.send_control(Mark("start"))
        send.send_nowait([1])
        send.send_control(Mark("barrier"))  # the channel is full: no wait
        send.send_control(Barrier(checkpoint=7))
        stats = send.statistics()
        assert stats.buffered == 1
        assert stats.buffered_items == 1
        with pytest.raises(WouldBlock):
            send.send_nowait([2])
        send.close()
        assert drain(recv) == [
            Mark("start"),
            [1],
            Mark("barrier"),
            Barrier(checkpoint=7),
        ]


async def test_control_message_goes_to_a_waiting_receiver() -> None:
    send, recv = open_channel[int](0)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            mark = Mark("m")
            send.send_control(mark)
        assert task.result() is mark
        send.send_control(Mark("buffered"))  # capacity 0, yet no wait
        assert recv.receive_nowait() == Mark("buffered")


async def test_send_control_rejects_non_control() -> None:
    send, recv = open_channel[int](1)
    with send, recv, pytest.raises(TypeError, match="Control"):
        send.send_control([1])  # type: ignore[arg-type]


# --- deadlines ------------------------------------------------------------------


async def test_receive_until_returns_none_at_its_deadline_and_cancels_nothing() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        started = loop.time()
        assert await recv.receive_until(started + 0.02) is None
        assert loop.time() - started >= 0.015
        assert task.cancelling() == 0  # woken, never cancelled
        assert recv.statistics().tasks_waiting_receive == 0
        send.send_nowait([1])  # the channel still works, nothing was lost
        assert await recv.receive_until(loop.time() + 0.02) == [1]


async def test_receive_until_gets_what_comes_before_its_deadline() -> None:
    send, recv = open_channel[str](1)
    with send, recv:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive_until(loop.time() + 5))
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.send_nowait(["a"])
            send.send_control(Mark("m"))
        assert task.result() == ["a"]
        # A past deadline still gives what is ready, in order.
        assert await recv.receive_until(loop.time() - 1) == Mark("m")
        assert await recv.receive_until(loop.time() - 1) is None


async def test_a_deadline_falling_due_while_the_task_is_elsewhere_is_harmless() -> None:
    # What `rebatch` does to a node's generator: the step that waits on its
    # input is held suspended while the task delivers the items before it.
    # Under asyncio.timeout the deadline would cancel the delivery; here it
    # only marks the held wait as expired.
    send, recv = open_channel[int](1)
    with send, recv:
        loop = asyncio.get_running_loop()
        step = recv.receive_until(loop.time() + 0.005).__await__()
        signal = step.send(None)  # suspended in the wait, not awaited by us
        await asyncio.sleep(0.03)  # "delivering", past the deadline
        with pytest.raises(StopIteration) as stop:
            step.send(signal.result())
        assert stop.value.value is None


async def test_receive_until_ends_and_fails_like_receive() -> None:
    send, recv = open_channel[int](1)
    with recv:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(recv.receive_until(loop.time() + 5))
        await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
        send.close()
        with pytest.raises(EndOfStream):
            await task


async def test_batch_handed_to_a_cancelled_deadline_receiver_goes_back() -> None:
    send, recv = open_channel[int](4)
    with send, recv:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive_until(loop.time() + 5))
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.send_nowait([1])  # handed straight to the waiting receiver
            task.cancel()  # ... which is cancelled before it can run
            await settle(task.done)
        assert task.cancelled()
        assert drain(recv) == [[1]]


# --- cancellation ---------------------------------------------------------------


async def test_cancelled_blocked_send_delivers_nothing() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        send.send_nowait([1])
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(send.send([2]))
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            task.cancel()
            await settle(task.done)
        assert task.cancelled()
        assert send.statistics().tasks_waiting_send == 0
        assert recv.receive_nowait() == [1]
        with pytest.raises(WouldBlock):
            recv.receive_nowait()
        send.send_nowait([3])  # the channel still works
        assert recv.receive_nowait() == [3]


async def test_send_cancelled_just_after_its_turn_came_delivers_nothing() -> None:
    # The receive grants the blocked sender its turn, and the cancellation
    # arrives before that sender runs: the batch must not be delivered, and
    # the turn passes to the next blocked sender.
    send, recv = open_channel[str](1)
    with send, recv:
        send.send_nowait(["x"])
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(send.send(["first"]))
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            second = tg.create_task(send.send(["second"]))
            await settle(lambda: send.statistics().tasks_waiting_send == 2)
            assert recv.receive_nowait() == ["x"]
            first.cancel()
            await settle(lambda: first.done() and second.done())
        assert first.cancelled()
        assert second.result() is None
        assert drain(recv) == [["second"]]
        stats = send.statistics()
        assert stats.tasks_waiting_send == 0
        assert stats.buffered == 0


async def test_rendezvous_send_cancelled_just_after_its_turn_came() -> None:
    send, recv = open_channel[str](0)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            sender = tg.create_task(send.send(["a"]))
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            receiver = tg.create_task(recv.receive())
            await asyncio.sleep(0)  # the receiver blocks and grants the sender
            sender.cancel()
            await settle(sender.done)
            assert sender.cancelled()
            assert not receiver.done()
            await send.send(["b"])
        assert receiver.result() == ["b"]


async def test_cancelled_blocked_receive_leaves_the_channel_usable() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            task.cancel()
            await settle(task.done)
        assert task.cancelled()
        assert recv.statistics().tasks_waiting_receive == 0
        send.send_nowait([1])
        assert recv.statistics().buffered == 1
        assert recv.receive_nowait() == [1]


async def test_batch_handed_to_a_receiver_cancelled_at_once_goes_back_first() -> None:
    send, recv = open_channel[int](4)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.send_nowait([1])  # handed straight to the waiting receiver
            task.cancel()  # ... which is cancelled before it can run
            send.send_nowait([2])
            await settle(task.done)
        assert task.cancelled()
        stats = recv.statistics()
        assert (stats.buffered, stats.buffered_items) == (2, 2)
        assert drain(recv) == [[1], [2]]


async def test_batch_handed_to_a_cancelled_receiver_goes_to_the_next_one() -> None:
    send, recv = open_channel[int](4)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            second = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 2)
            send.send_nowait([1])
            first.cancel()
            await settle(lambda: first.done() and second.done())
        assert first.cancelled()
        assert second.result() == [1]
        assert recv.statistics().buffered == 0


async def test_receiver_cancelled_while_being_told_of_the_end() -> None:
    send, recv = open_channel[int](4)
    with recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.close()
            task.cancel()
            await settle(task.done)
        assert task.cancelled()
        with pytest.raises(EndOfStream):
            recv.receive_nowait()


async def test_batch_given_back_while_the_stream_ends_is_still_delivered() -> None:
    send, recv = open_channel[int](4)
    with recv:
        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            second = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 2)
            send.send_nowait([1])  # handed to `first`...
            first.cancel()  # ... which is cancelled before it runs
            send.close()  # wakes `second` with the end of the stream
            await settle(lambda: first.done() and second.done())
        assert first.cancelled()
        assert second.result() == [1]  # the given-back batch comes before the end
        with pytest.raises(EndOfStream):
            recv.receive_nowait()


async def test_rendezvous_batch_given_back_may_exceed_capacity() -> None:
    # The one documented case in which buffered > capacity: the sender has
    # already completed, so the batch can only wait at the head of the buffer.
    send, recv = open_channel[int](0)
    with send, recv:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.send_nowait([1])
            task.cancel()
            await settle(task.done)
        assert recv.statistics().buffered == 1
        assert recv.receive_nowait() == [1]


async def test_given_back_batch_is_dropped_when_receivers_are_gone() -> None:
    send, recv = open_channel[int](4)
    with send:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(recv.receive())
            await settle(lambda: recv.statistics().tasks_waiting_receive == 1)
            send.send_nowait([1])
            task.cancel()
            recv.close()
            await settle(task.done)
        assert send.statistics().buffered == 0


# --- statistics -------------------------------------------------------------------


async def test_statistics_track_buffer_items_peak_and_waiters() -> None:
    send, recv = open_channel[int](3)
    with send, recv:
        assert send.statistics() == ChannelStatistics(
            buffered=0,
            buffered_items=0,
            capacity=3,
            open_send_channels=1,
            open_receive_channels=1,
            tasks_waiting_send=0,
            tasks_waiting_receive=0,
            peak_buffered=0,
        )
        send.send_nowait([1, 2, 3])
        send.send_nowait([4])
        send.send_control(Mark("m"))
        stats = recv.statistics()
        assert (stats.buffered, stats.buffered_items, stats.peak_buffered) == (2, 4, 2)
        recv.receive_nowait()
        stats = recv.statistics()
        assert (stats.buffered, stats.buffered_items, stats.peak_buffered) == (1, 1, 2)
        send.send_nowait([5, 6])
        send.send_nowait([7])
        async with asyncio.TaskGroup() as tg:
            tg.create_task(send.send([8]))
            await settle(lambda: send.statistics().tasks_waiting_send == 1)
            stats = send.statistics()
            assert (stats.buffered, stats.buffered_items) == (3, 4)
            assert stats.peak_buffered == 3
            assert drain(recv) == [[4], Mark("m"), [5, 6], [7]]
            await settle(lambda: send.statistics().buffered == 1)
        assert recv.receive_nowait() == [8]
        stats = send.statistics()
        assert (stats.buffered, stats.buffered_items) == (0, 0)
        assert stats.peak_buffered == 3
        clone = send.clone()
        assert send.statistics().open_send_channels == 2
        clone.close()
        assert send.statistics().open_send_channels == 1
        async with asyncio.TaskGroup() as tg:
            tg.create_task(recv.receive())
            await settle(lambda: send.statistics().tasks_waiting_receive == 1)
            send.send_nowait([9])
        assert send.statistics().tasks_waiting_receive == 0


def test_statistics_record_is_frozen() -> None:
    send, recv = open_channel[int](1)
    with send, recv:
        stats = send.statistics()
        with pytest.raises(AttributeError):
            stats.buffered = 5  # type: ignore[misc]


# --- leaks ------------------------------------------------------------------------


def open_and_drop(keep: str) -> SendChannel[int] | ReceiveChannel[int]:
    send, recv = open_channel[int](1)
    kept: SendChannel[int] | ReceiveChannel[int] = send if keep == "send" else recv
    del send, recv
    gc.collect()
    return kept


def clone_and_drop(send: SendChannel[int]) -> None:
    send.clone()
    gc.collect()


@pytest.mark.parametrize(
    ("keep", "dropped"), [("send", "ReceiveChannel"), ("receive", "SendChannel")]
)
def test_dropping_an_unclosed_half_warns(keep: str, dropped: str) -> None:
    with pytest.warns(ResourceWarning, match=f"unclosed <{dropped}"):
        kept = open_and_drop(keep)
    kept.close()


def test_dropping_an_unclosed_clone_warns() -> None:
    send, recv = open_channel[int](1)
    with send, recv, pytest.warns(ResourceWarning, match="unclosed <SendChannel"):
        clone_and_drop(send)


def test_no_warning_for_closed_halves() -> None:
    send, recv = open_channel[int](1)
    send.close()
    recv.close()
    del send, recv
    gc.collect()  # filterwarnings=error turns any ResourceWarning into a failure


# --- properties -------------------------------------------------------------------

pauses = st.lists(st.integers(min_value=0, max_value=3), max_size=8)
messages = st.lists(
    st.one_of(
        st.lists(st.integers(), max_size=4),
        st.builds(Mark, st.sampled_from(["a", "b"])),
    ),
    max_size=30,
)


def pause_for(pattern: list[int], step: int) -> int:
    return pattern[step % len(pattern)] if pattern else 0


def check_bounds(stats: ChannelStatistics) -> None:
    assert 0 <= stats.buffered <= stats.capacity
    assert stats.buffered <= stats.peak_buffered <= stats.capacity
    assert stats.buffered_items >= stats.buffered  # batches are never empty
    if stats.buffered == 0:
        assert stats.buffered_items == 0


@settings(max_examples=150, deadline=None)
@given(
    sent=messages,
    capacity=st.integers(min_value=0, max_value=4),
    send_pauses=pauses,
    recv_pauses=pauses,
    nowait=st.booleans(),
)
def test_property_order_exactly_once_and_bounded(
    sent: list[list[int] | Control],
    capacity: int,
    send_pauses: list[int],
    recv_pauses: list[int],
    nowait: bool,
) -> None:
    # With capacity 0, receive_nowait() never sees a batch: poll only with room.
    nowait = nowait and capacity > 0

    async def scenario() -> list[list[int] | Control]:
        send, recv = open_channel[int](capacity)
        received: list[list[int] | Control] = []
        finished = False

        async def producer() -> None:
            with send:
                for step, msg in enumerate(sent):
                    if isinstance(msg, Control):
                        send.send_control(msg)
                    else:
                        await send.send(msg)
                    check_bounds(send.statistics())
                    for _ in range(pause_for(send_pauses, step)):
                        await asyncio.sleep(0)

        async def consumer() -> None:
            nonlocal finished
            with recv:
                step = 0
                while True:
                    try:
                        if nowait:
                            try:
                                msg = recv.receive_nowait()
                            except WouldBlock:
                                await asyncio.sleep(0)
                                continue
                        else:
                            msg = await recv.receive()
                    except EndOfStream:
                        break
                    received.append(msg)
                    check_bounds(recv.statistics())
                    for _ in range(pause_for(recv_pauses, step)):
                        await asyncio.sleep(0)
                    step += 1
            finished = True

        async def observer() -> None:
            while not finished:
                check_bounds(recv.statistics())
                await asyncio.sleep(0)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(observer())
            tg.create_task(consumer())
            tg.create_task(producer())
        return received

    received = asyncio.run(scenario())
    expected = [msg for msg in sent if isinstance(msg, Control) or msg]
    assert received == expected
    assert all(r is e for r, e in zip(received, expected, strict=True))


@settings(max_examples=100, deadline=None)
@given(
    per_producer=st.lists(
        st.lists(st.integers(min_value=0, max_value=3), max_size=12),
        min_size=1,
        max_size=3,
    ),
    consumers=st.integers(min_value=1, max_value=3),
    capacity=st.integers(min_value=0, max_value=3),
    send_pauses=pauses,
    recv_pauses=pauses,
)
def test_property_fan_in_and_shared_work_lose_nothing(
    per_producer: list[list[int]],
    consumers: int,
    capacity: int,
    send_pauses: list[int],
    recv_pauses: list[int],
) -> None:
    # Producer p sends batches of sizes per_producer[p], tagging each item with
    # (p, sequence number); every item must arrive once, and with one consumer
    # each producer's items must arrive in the order sent.
    async def scenario() -> list[list[tuple[int, int]]]:
        send, recv = open_channel[tuple[int, int]](capacity)
        senders = [send] + [send.clone() for _ in per_producer[1:]]
        receivers = [recv] + [recv.clone() for _ in range(consumers - 1)]
        got: list[list[tuple[int, int]]] = [[] for _ in receivers]

        async def producer(p: int, half: SendChannel[tuple[int, int]]) -> None:
            seq = 0
            with half:
                for step, size in enumerate(per_producer[p]):
                    await half.send([(p, seq + i) for i in range(size)])
                    seq += size
                    check_bounds(half.statistics())
                    for _ in range(pause_for(send_pauses, step + p)):
                        await asyncio.sleep(0)

        async def consumer(c: int, half: ReceiveChannel[tuple[int, int]]) -> None:
            with half:
                step = 0
                async for msg in half:
                    assert isinstance(msg, list)
                    assert msg
                    got[c].extend(msg)
                    check_bounds(half.statistics())
                    for _ in range(pause_for(recv_pauses, step + c)):
                        await asyncio.sleep(0)
                    step += 1

        async with asyncio.TaskGroup() as tg:
            for c, rhalf in enumerate(receivers):
                tg.create_task(consumer(c, rhalf))
            for p, shalf in enumerate(senders):
                tg.create_task(producer(p, shalf))
        return got

    got = asyncio.run(scenario())
    everything = sorted(item for part in got for item in part)
    expected = sorted(
        (p, i) for p, sizes in enumerate(per_producer) for i in range(sum(sizes))
    )
    assert everything == expected
    for part in got:  # within one consumer, each producer's items stay in order
        for p in range(len(per_producer)):
            seqs = [i for q, i in part if q == p]
            assert seqs == sorted(seqs)


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=3), max_size=25),
    capacity=st.integers(min_value=0, max_value=3),
    send_patience=pauses,
    recv_patience=pauses,
)
def test_property_cancellation_loses_and_duplicates_nothing(
    sizes: list[int],
    capacity: int,
    send_patience: list[int],
    recv_patience: list[int],
) -> None:
    # Each send and each receive runs as its own task that is cancelled if it
    # has not finished after a random number of loop turns. A cancelled send
    # must deliver nothing; everything a completed send delivered must reach
    # exactly one completed receive, in order (a batch handed to a receive
    # that is cancelled at that moment goes back to the head of the buffer).
    async def scenario() -> tuple[list[list[int]], list[list[int]]]:
        send, recv = open_channel[int](capacity)
        completed: list[list[int]] = []
        received: list[list[int]] = []
        batches = [list(range(size)) for size in sizes]

        async def attempt(task: asyncio.Task[Any], patience: int) -> bool:
            for _ in range(patience):
                if task.done():
                    break
                await asyncio.sleep(0)
            if not task.done():
                task.cancel()
            await settle(task.done)
            return not task.cancelled()

        async def producer(tg: asyncio.TaskGroup) -> None:
            with send:
                for step, batch in enumerate(batches):
                    task = tg.create_task(send.send(batch))
                    if await attempt(task, pause_for(send_patience, step) + 1):
                        completed.append(batch)
                    stats = send.statistics()
                    assert stats.buffered <= capacity + 1

        async def receive_or_none() -> list[int] | Control | None:
            try:
                return await recv.receive()
            except EndOfStream:
                return None

        async def consumer(tg: asyncio.TaskGroup) -> None:
            with recv:
                step = 0
                while True:
                    task = tg.create_task(receive_or_none())
                    step += 1
                    if not await attempt(task, pause_for(recv_patience, step) + 1):
                        continue
                    msg = task.result()
                    if msg is None:
                        return
                    assert isinstance(msg, list)
                    received.append(msg)

        async def guarded_receive_loop(tg: asyncio.TaskGroup) -> None:
            try:
                await consumer(tg)
            finally:
                stats = recv.statistics()
                assert stats.tasks_waiting_receive == 0

        async with asyncio.TaskGroup() as tg:
            tg.create_task(guarded_receive_loop(tg))
            tg.create_task(producer(tg))
        stats = send.statistics()
        assert (stats.tasks_waiting_send, stats.tasks_waiting_receive) == (0, 0)
        return completed, received

    completed, received = asyncio.run(scenario())
    assert received == completed
    assert all(r is c for r, c in zip(received, completed, strict=True))
