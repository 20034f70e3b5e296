"""`gc_paused`: a burst of long-lived allocations, and what it leaves behind."""

from __future__ import annotations

import gc

import pytest

from flowstream.runtime.stepping import gc_paused


@pytest.fixture(autouse=True)
def collector() -> object:
    """Every test starts with the collector on and nothing frozen."""
    gc.unfreeze()
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def tracked_in_oldest(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects(generation=2))


def test_long_lived_objects_go_to_the_oldest_generation_without_a_walk() -> None:
    with gc_paused(long_lived=True):
        assert not gc.isenabled()
        made = [[i] for i in range(5_000)]
    assert gc.isenabled()
    # No young collection is pending over what was just made...
    assert gc.get_count()[0] < 700
    # ...because it already is where a long-lived object ends up.
    assert tracked_in_oldest(made[0])
    assert tracked_in_oldest(made[-1])


def test_a_plain_pause_leaves_the_objects_young() -> None:
    with gc_paused():
        made = [[i] for i in range(5_000)]
    assert gc.isenabled()
    assert not tracked_in_oldest(made[-1])


def test_nothing_frozen_is_thawed() -> None:
    kept = [[0]]
    gc.freeze()  # as a DAG run does while it runs (gc_frozen_enter)
    assert not tracked_in_oldest(kept[0])  # frozen: in no generation
    with gc_paused(long_lived=True):
        made = [[i] for i in range(100)]
    # Still frozen. (Not the freeze count: other threads of the test run,
    # Ray's among them, free frozen objects, which lowers it.)
    assert not tracked_in_oldest(kept[0])
    assert gc.get_freeze_count() > 0
    assert not tracked_in_oldest(made[-1])


def test_a_caller_that_turned_the_collector_off_keeps_it_off() -> None:
    gc.disable()
    with gc_paused(long_lived=True):
        pass
    assert not gc.isenabled()
