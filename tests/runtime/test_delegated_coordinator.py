"""The coordinator's stand-in in one process of many (no Ray needed)."""

from __future__ import annotations

import asyncio
import functools

from flowstream.runtime.checkpointing.barriers import SourceBarriers
from flowstream.runtime.checkpointing.delegated import DelegatedCoordinator


def attached(
    coord: DelegatedCoordinator, marked: list[tuple[str, int]], *, at_rest: bool
) -> tuple[asyncio.Event, list[int]]:
    """Attach two sources (one fed in-band); return `finished` and commits."""
    finished = asyncio.Event()
    commits: list[int] = []

    async def committed(epoch: int) -> None:
        commits.append(epoch)

    def mark(name: str, epoch: int) -> None:
        marked.append((name, epoch))
        coord.report({name: b"state"})

    coord.attach(
        {
            name: SourceBarriers(lambda: at_rest, functools.partial(mark, name))
            for name in ("src", "recv0")
        },
        finished=finished,
        stopping=lambda: False,
        committed=committed,
    )
    coord.segments = 2
    return finished, commits


def test_an_epoch_starts_by_the_drivers_call_or_in_band_whichever_first() -> None:
    async def main() -> None:
        coord = DelegatedCoordinator(first_epoch=4, in_band=frozenset({"recv0"}))
        marked: list[tuple[str, int]] = []
        _, commits = attached(coord, marked, at_rest=True)
        # The in-band barrier of epoch 4 came before the driver's call.
        coord.advance(4)
        coord.advance(4)  # again: no second start (states kept)
        coord.report({"recv0": b"r"})
        states = await coord.checkpoint(4)
        # Only the process's own source was asked; the in-band one was not.
        assert marked == [("src", 4)]
        assert states == {"recv0": b"r", "src": b"state"}
        assert not coord.released.is_set()  # held until the driver commits
        await coord.decide(4)
        assert coord.committed == 4
        assert coord.released.is_set()
        assert commits == [4]  # the sinks' commit hooks ran here
        # A stale call gets nothing.
        coord.advance(5)
        assert await coord.checkpoint(4) is None

    asyncio.run(main())


def test_no_more_epochs_once_stopped_and_nothing_once_the_run_ended() -> None:
    async def main() -> None:
        coord = DelegatedCoordinator(first_epoch=1)
        marked: list[tuple[str, int]] = []
        finished, _ = attached(coord, marked, at_rest=False)
        # Not at rest: asked, not marked; the run's segments then end.
        call = asyncio.create_task(coord.checkpoint(1))
        await asyncio.wait([call], timeout=0)  # let it ask the sources
        finished.set()
        assert await call is None  # abandoned: the final epoch covers it
        assert marked == []  # the source was asked and never came round
        coord.stop_epochs()
        assert await coord.checkpoint(2) is None
        pending = asyncio.create_task(coord.ready_states())
        coord.ended()
        assert await pending is None

    asyncio.run(main())


def test_a_whole_process_snapshot_waits_for_the_drivers_epoch_number() -> None:
    async def main() -> None:
        coord = DelegatedCoordinator(first_epoch=3)
        _, commits = attached(coord, [], at_rest=True)
        coord.trigger()  # the final snapshot numbers itself 3 here ...
        coord.states = {"sink": b"s"}
        commit = asyncio.create_task(coord.commit())
        assert await coord.ready_states() == {"sink": b"s"}
        assert not commit.done()
        await coord.decide(7)  # ... the driver commits it as 7
        await commit
        assert (coord.epoch, coord.committed) == (7, 7)
        assert commits == []  # the executor runs the hooks after `commit`

    asyncio.run(main())
