"""Per-batch take stamps: what a probed head's batch latency is measured from."""

from __future__ import annotations

from collections import deque

from flowstream.runtime.context import NodeRuntime, RunState
from flowstream.runtime.events import EventBus


def runtime(max_takes: int) -> NodeRuntime:
    rt = NodeRuntime(
        run_id="run",
        node_id="later",
        node_type="time.delay",
        run_state=RunState(),
        bus=EventBus(),
        dead_letters=[],
        error_connected=False,
    )
    rt.takes, rt.max_takes = deque(), max_takes
    return rt


def test_each_output_batch_maps_to_the_take_of_its_first_item() -> None:
    rt = runtime(8)
    stamps = []
    for size in (2, 3, 1):  # items 1-2, 3-5, 6
        rt.took(size)
        stamps.append(rt.taken_at)
    assert rt.items_in == 6
    assert stamps == sorted(stamps)
    # Nothing emitted yet: the next batch starts with item 1.
    assert rt.take_of(0) == stamps[0]
    assert rt.take_of(1) == stamps[0]
    # Items 1-2 emitted: item 3 came in the second batch, even though a
    # later batch was taken since (what the latest take would have said).
    assert rt.take_of(2) == stamps[1]
    assert rt.take_of(5) == stamps[2]
    assert rt.take_of(6) == stamps[2]  # all emitted: its latest take
    assert rt.takes is not None
    assert len(rt.takes) == 1  # stamps of batches wholly emitted are gone


def test_a_head_emitting_fewer_items_than_it_takes_falls_back_to_latest() -> None:
    rt = runtime(3)
    for _ in range(3):
        rt.took(10)
    assert rt.takes is not None
    rt.took(10)  # a fourth batch unmatched: stop matching
    assert rt.takes is None
    assert rt.take_of(0) == rt.taken_at
    rt.took(1)
    assert rt.take_of(0) == rt.taken_at


def test_without_stamps_it_is_the_latest_take() -> None:
    rt = runtime(8)
    rt.takes = None
    rt.took(4)
    rt.took(4)
    assert rt.items_in == 8
    assert rt.take_of(0) == rt.taken_at
