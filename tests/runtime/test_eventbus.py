from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from flowstream.core.events import (
    ExecutionEvent,
    NodeCompleted,
    NodeEvent,
    NodeStarted,
    NodeStats,
    WorkflowCompleted,
    WorkflowStarted,
    encode_event,
)
from flowstream.errors import DecodeError, EndOfStream, WouldBlock
from flowstream.runtime.events import (
    EventBus,
    EventBusStatistics,
    EventRecorder,
    Subscription,
    iter_events,
    read_events,
    replay,
)


def started(node_id: str, run_id: str = "r1") -> NodeStarted:
    return NodeStarted(run_id=run_id, timestamp=1.0, node_id=node_id, node_type="t")


def a_run() -> list[ExecutionEvent]:
    return [
        WorkflowStarted(run_id="r1", timestamp=1.0, workflow="w", mode="dag", nodes=2),
        started("a"),
        NodeEvent(
            run_id="r1", timestamp=1.1, node_id="a", name="tick", data={"n": [1]}
        ),
        NodeCompleted(
            run_id="r1",
            timestamp=1.2,
            node_id="a",
            node_type="t",
            stats=NodeStats(items_in=1, items_out=1, duration_s=0.2),
        ),
        WorkflowCompleted(
            run_id="r1", timestamp=1.3, status="completed", duration_s=0.3
        ),
    ]


def drain_nowait(sub: Subscription) -> list[ExecutionEvent]:
    out: list[ExecutionEvent] = []
    while True:
        try:
            out.append(sub.receive_nowait())
        except (WouldBlock, EndOfStream):
            return out


async def wait_until_waiting(sub: Subscription) -> None:
    # Lets a reader task reach its wait, without sleeping on the clock.
    for _ in range(100):
        if sub._waiter is not None:
            return
        await asyncio.sleep(0)
    pytest.fail("the reader never waited")


# --- broadcast ------------------------------------------------------------


async def test_broadcast_to_three_subscribers_in_order() -> None:
    bus = EventBus()
    subs = [bus.subscribe() for _ in range(3)]
    events = [started(f"n{i}") for i in range(50)]
    for event in events:
        bus.publish(event)
    bus.close()
    for sub in subs:
        assert [e async for e in sub] == events
    assert bus.statistics() == EventBusStatistics(
        subscribers=0, listeners=0, published=50, dropped=0
    )


async def test_waiting_readers_are_woken_in_order() -> None:
    bus = EventBus()
    subs = [bus.subscribe() for _ in range(3)]
    received: list[list[ExecutionEvent]] = [[] for _ in subs]

    async def read(sub: Subscription, into: list[ExecutionEvent]) -> None:
        async for event in sub:
            into.append(event)

    events = a_run()
    async with asyncio.TaskGroup() as tg:
        for sub, into in zip(subs, received, strict=True):
            tg.create_task(read(sub, into))
        for sub in subs:
            await wait_until_waiting(sub)
        # One at a time, so every reader waits again between events.
        for event in events:
            bus.publish(event)
            for sub in subs:
                await wait_until_waiting(sub)
        bus.close()
    assert received == [events, events, events]


async def test_only_events_after_subscribe_are_seen() -> None:
    bus = EventBus()
    bus.publish(started("before"))
    sub = bus.subscribe()
    bus.publish(started("after"))
    bus.close()
    assert [e async for e in sub] == [started("after")]


def test_publish_with_no_subscribers_is_a_no_op() -> None:
    bus = EventBus()
    for event in a_run():
        bus.publish(event)
    assert bus.statistics() == EventBusStatistics(
        subscribers=0, listeners=0, published=0, dropped=0
    )
    sub = bus.subscribe()
    bus.publish(started("x"))
    assert drain_nowait(sub) == [started("x")]
    assert bus.statistics().published == 1
    sub.close()


def test_publish_after_close_is_a_no_op() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    calls: list[ExecutionEvent] = []
    bus.add_listener(calls.append)
    bus.close()
    bus.close()
    bus.publish(started("late"))
    assert calls == []
    with pytest.raises(EndOfStream):
        sub.receive_nowait()
    assert bus.closed
    assert bus.statistics().published == 0


# --- bounded buffers ------------------------------------------------------


async def test_full_buffer_drops_oldest_and_counts() -> None:
    bus = EventBus(max_buffered=4)
    slow = bus.subscribe()
    small = bus.subscribe(max_buffered=2)
    roomy = bus.subscribe(max_buffered=100)
    events = [started(f"n{i}") for i in range(10)]
    for event in events:
        bus.publish(event)

    assert slow.dropped == 6
    assert small.dropped == 8
    assert roomy.dropped == 0
    assert bus.statistics().dropped == 14
    bus.close()
    assert [e async for e in slow] == events[-4:]
    assert [e async for e in small] == events[-2:]
    assert [e async for e in roomy] == events


def test_dropped_total_keeps_closed_subscriptions() -> None:
    bus = EventBus(max_buffered=1)
    with bus.subscribe() as sub:
        bus.publish(started("a"))
        bus.publish(started("b"))
        assert sub.dropped == 1
    assert bus.statistics() == EventBusStatistics(
        subscribers=0, listeners=0, published=2, dropped=1
    )


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8", True, None])
def test_max_buffered_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_buffered must be an int >= 1, got"):
        EventBus(max_buffered=bad)  # type: ignore[arg-type]
    if bad is not None:
        with pytest.raises(ValueError, match=repr(bad)):
            EventBus().subscribe(max_buffered=bad)  # type: ignore[arg-type]


# --- closing --------------------------------------------------------------


async def test_bus_close_ends_iteration_after_draining() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    events = a_run()
    for event in events:
        bus.publish(event)
    bus.close()
    assert sub.closed
    assert [e async for e in sub] == events
    assert [e async for e in sub] == []


async def test_bus_close_wakes_a_waiting_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    received: list[ExecutionEvent] = []

    async def read() -> None:
        async for event in sub:
            received.append(event)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        await wait_until_waiting(sub)
        bus.publish(started("a"))
        bus.publish(started("b"))
        bus.close()
    assert received == [started("a"), started("b")]


async def test_subscription_close_discards_buffer_and_ends_iteration() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(started("a"))
    sub.close()
    sub.close()
    assert [e async for e in sub] == []
    assert bus.statistics().subscribers == 0
    bus.publish(started("b"))
    with pytest.raises(EndOfStream):
        sub.receive_nowait()


async def test_subscription_close_wakes_its_waiting_reader() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    received: list[ExecutionEvent] = []

    async def read() -> None:
        async for event in sub:
            received.append(event)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(read())
        await wait_until_waiting(sub)
        sub.close()
    assert received == []


def test_with_block_closes_the_subscription() -> None:
    bus = EventBus()
    with bus.subscribe() as sub:
        assert bus.statistics().subscribers == 1
        assert not sub.closed
    assert sub.closed
    assert bus.statistics().subscribers == 0


async def test_subscribe_after_close_is_already_finished() -> None:
    bus = EventBus()
    bus.close()
    sub = bus.subscribe()
    assert [e async for e in sub] == []
    assert bus.statistics().subscribers == 0


def test_receive_nowait() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    with pytest.raises(WouldBlock):
        sub.receive_nowait()
    bus.publish(started("a"))
    assert sub.receive_nowait() == started("a")
    bus.close()
    with pytest.raises(EndOfStream):
        sub.receive_nowait()


async def test_cancelled_reader_leaves_the_subscription_usable() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(anext(sub))
        await wait_until_waiting(sub)
        task.cancel()
        # Publishing between the cancel and the task's unwinding must not
        # touch the cancelled future.
        bus.publish(started("a"))
    assert task.cancelled()
    assert sub._waiter is None
    assert await anext(sub) == started("a")
    sub.close()


async def test_two_readers_on_one_subscription_is_an_error() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    async with asyncio.TaskGroup() as tg:
        first = tg.create_task(anext(sub))
        await wait_until_waiting(sub)
        with pytest.raises(RuntimeError, match="already waiting"):
            await anext(sub)
        bus.publish(started("a"))
    assert first.result() == started("a")
    sub.close()


# --- listeners ------------------------------------------------------------


def test_listener_is_called_inline() -> None:
    bus = EventBus()
    seen: list[ExecutionEvent] = []
    remove = bus.add_listener(seen.append)
    event = started("a")
    bus.publish(event)
    # No await in between: the call happened inside publish.
    assert seen == [event]
    assert bus.statistics().listeners == 1
    remove()
    remove()
    bus.publish(started("b"))
    assert seen == [event]
    assert bus.statistics().listeners == 0


def test_emit_stamps_run_id_and_time() -> None:
    bus = EventBus()
    seen: list[ExecutionEvent] = []
    bus.add_listener(seen.append)
    before = time.time()
    bus.emit(NodeEvent, "r7", node_id="n", name="tick", data=[1])
    after = time.time()
    (event,) = seen
    assert isinstance(event, NodeEvent)
    assert (event.run_id, event.node_id, event.name, event.data) == (
        "r7",
        "n",
        "tick",
        [1],
    )
    assert before <= event.timestamp <= after
    with pytest.raises(TypeError, match="no_such_field"):
        bus.emit(NodeEvent, "r7", node_id="n", name="x", no_such_field=1)


def test_emit_builds_nothing_nobody_would_see() -> None:
    bus = EventBus()
    # No subscriber, no listener: the event is not even built, so a field
    # the class does not have goes unnoticed (and costs nothing).
    bus.emit(NodeEvent, "r1", no_such_field=1)
    assert bus.statistics().published == 0


ROOT = Path(__file__).resolve().parents[2]


def test_events_are_stamped_in_one_place() -> None:
    # Every publisher goes through EventBus.emit: a run id and a timestamp
    # filled in by hand elsewhere is a second copy of it.
    stamped = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "flowstream").rglob("*.py"))
        if "timestamp=time.time()" in path.read_text()
    ]
    assert stamped == ["flowstream/runtime/events.py"]


def test_raising_listener_is_removed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    before: list[ExecutionEvent] = []
    after: list[ExecutionEvent] = []
    calls = 0

    def broken(event: ExecutionEvent) -> None:
        nonlocal calls
        calls += 1
        msg = "listener bug"
        raise RuntimeError(msg)

    bus.add_listener(before.append)
    bus.add_listener(broken)
    bus.add_listener(after.append)
    sub = bus.subscribe()
    events = [started("a"), started("b")]
    with caplog.at_level(logging.ERROR, logger="flowstream.events"):
        for event in events:
            bus.publish(event)

    assert calls == 1
    assert before == events
    assert after == events
    assert drain_nowait(sub) == events
    assert bus.statistics().listeners == 2
    [record] = caplog.records
    assert record.name == "flowstream.events"
    assert record.levelno == logging.ERROR
    assert "removed it" in record.getMessage()
    assert "NodeStarted" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    sub.close()


def test_listener_may_remove_itself_while_called() -> None:
    bus = EventBus()
    seen: list[ExecutionEvent] = []

    def once(event: ExecutionEvent) -> None:
        seen.append(event)
        remove()

    remove = bus.add_listener(once)
    bus.publish(started("a"))
    bus.publish(started("b"))
    assert seen == [started("a")]


def test_same_listener_twice_is_removed_one_at_a_time() -> None:
    bus = EventBus()
    seen: list[ExecutionEvent] = []
    remove_first = bus.add_listener(seen.append)
    bus.add_listener(seen.append)
    remove_first()
    bus.publish(started("a"))
    assert seen == [started("a")]


# --- recording and replay -------------------------------------------------


def test_recorder_writes_json_lines_that_read_back_equal(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    bus = EventBus()
    events = a_run()
    with EventRecorder(path) as recorder:
        bus.add_listener(recorder.write)
        for event in events:
            bus.publish(event)
    assert recorder.closed
    assert recorder.written == len(events)

    lines = path.read_bytes().splitlines()
    assert len(lines) == len(events)
    assert [json.loads(line)["event"] for line in lines] == [
        type(e).__name__ for e in events
    ]
    assert read_events(path) == events
    assert list(iter_events(str(path))) == events


def test_recorder_attach_detaches_on_close(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    bus = EventBus()
    with EventRecorder(path) as recorder:
        recorder.attach(bus)
        bus.publish(started("a"))
    assert bus.statistics().listeners == 0
    # Closed and detached: a later event neither lands nor logs an error.
    bus.publish(started("b"))
    assert read_events(path) == [started("a")]


def test_recorder_append_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventRecorder(path) as recorder:
        recorder.write(started("a"))
    with EventRecorder(path, append=True) as recorder:
        recorder.write(started("b"))
    assert read_events(path) == [started("a"), started("b")]
    with EventRecorder(path) as recorder:
        recorder.write(started("c"))
    assert read_events(path) == [started("c")]


def test_recorder_write_after_close_raises(tmp_path: Path) -> None:
    recorder = EventRecorder(tmp_path / "run.jsonl")
    recorder.close()
    recorder.close()
    with pytest.raises(ValueError, match="is closed"):
        recorder.write(started("a"))


def test_recorder_skips_unencodable_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run.jsonl"
    bus = EventBus()
    odd = NodeEvent(run_id="r1", timestamp=1.0, node_id="a", name="odd", data=object())
    with (
        caplog.at_level(logging.WARNING, logger="flowstream.events"),
        EventRecorder(path) as recorder,
    ):
        recorder.attach(bus)
        bus.publish(started("a"))
        bus.publish(odd)
        bus.publish(started("b"))
        # Still attached: one bad event does not end the recording.
        assert bus.statistics().listeners == 1
    assert recorder.skipped == 1
    assert read_events(path) == [started("a"), started("b")]
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "cannot encode NodeEvent" in record.getMessage()


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventRecorder(path) as recorder:
        recorder.write(started("a"))
    with path.open("ab") as file:
        file.write(b"\n")
        file.write(b'{"event": "NodeStarted", "run_id": "r1", "timestamp": "noon"}\n')

    with pytest.raises(DecodeError) as info:
        read_events(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: invalid event: ")
    assert "`$.timestamp`" in message
    assert isinstance(info.value.__cause__, DecodeError)

    # The lazy form yields the good lines before failing on the bad one.
    events = iter_events(path)
    assert next(events) == started("a")
    with pytest.raises(DecodeError, match=r":3: "):
        next(events)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"\n" + b"\n".join(encode_event(e) for e in a_run()) + b"\n\n  \n")
    assert read_events(path) == a_run()


async def test_replay_delivers_in_order(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventRecorder(path) as recorder:
        for event in a_run():
            recorder.write(event)

    bus = EventBus()
    sub = bus.subscribe()
    seen: list[ExecutionEvent] = []
    bus.add_listener(seen.append)
    assert replay(iter_events(path), bus) == len(a_run())
    bus.close()
    assert [e async for e in sub] == a_run()
    assert seen == a_run()


def test_reprs_show_state() -> None:
    bus = EventBus(max_buffered=2)
    sub = bus.subscribe()
    for name in "abc":
        bus.publish(started(name))
    assert repr(bus) == "<EventBus open subscribers=1 listeners=0>"
    assert repr(sub) == "<Subscription open buffered=2/2 dropped=1>"
    bus.close()
    assert repr(bus) == "<EventBus closed subscribers=0 listeners=0>"
    assert repr(sub) == "<Subscription closed buffered=2/2 dropped=1>"


def test_recorder_flush_makes_lines_readable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventRecorder(path) as recorder:
        recorder.write(started("a"))
        recorder.flush()
        assert read_events(path) == [started("a")]
