"""The barrier state of checkpointing: one route for starting an epoch."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from flowstream.runtime.checkpointing import CheckpointStore, Coordinator
from flowstream.runtime.checkpointing.barriers import (
    Alignment,
    SourceBarriers,
    run_epochs,
)

if TYPE_CHECKING:
    from pathlib import Path


def test_alignment_passes_on_the_last_producers_barrier() -> None:
    align = Alignment(producers=3)
    assert [align.arrived(1), align.arrived(1)] == [False, False]
    assert align.arrived(2) is False  # another epoch counts on its own
    assert align.arrived(1) is True
    assert [align.arrived(2), align.arrived(2)] == [False, True]


def test_a_busy_source_takes_the_epoch_itself_between_batches() -> None:
    marked: list[int] = []
    barriers = SourceBarriers(lambda: False, marked.append)
    barriers.request(4)
    assert (barriers.due, barriers.gate, marked) == (4, None, [])
    assert barriers.poll() is False  # still busy
    assert barriers.take_due() == 4
    assert (barriers.due, barriers.gate, marked) == (None, 4, [])
    assert barriers.take_due() is None


def test_a_source_at_rest_is_marked_at_once_and_only_once() -> None:
    marked: list[int] = []
    resting = [False]
    barriers = SourceBarriers(lambda: resting[0], marked.append)
    barriers.request(1)
    assert marked == []
    resting[0] = True  # it went back to waiting on its input
    assert barriers.poll() is True
    assert barriers.poll() is False
    assert (marked, barriers.due, barriers.gate) == ([1], None, 1)
    assert barriers.take_due() is None  # its own loop does not mark it again


async def test_run_epochs_commits_once_every_segment_reported(tmp_path: Path) -> None:
    async with CheckpointStore(tmp_path / "cp.db", 10) as store:
        await store.begin("k", "wf")
        coord = Coordinator(store, "k", 0.01, segments=2)
        finished = asyncio.Event()
        committed: list[int] = []

        def mark(epoch: int) -> None:
            coord.report({"src": f"at {epoch}".encode()})

        source = SourceBarriers(lambda: True, mark)

        async def after(epoch: int) -> None:
            committed.append(epoch)
            if epoch == 2:
                finished.set()

        async def downstream() -> None:
            # The other segment reports each epoch after the source did.
            seen = 0
            while not finished.is_set():
                if coord.epoch > seen and coord.reported == 1:
                    seen = coord.epoch
                    coord.report({})
                await asyncio.sleep(0.001)

        helper = asyncio.create_task(downstream())
        await asyncio.wait_for(
            run_epochs(
                coord,
                [source],
                finished=finished,
                stopping=lambda: False,
                committed=after,
            ),
            timeout=30,
        )
        helper.cancel()
        assert committed == [1, 2]
        assert await store.latest_epoch("k") == (2, {"src": b"at 2"})
        assert source.gate == 2  # the source holds until it sees the commit
        await source.hold(coord)
        assert source.gate is None
