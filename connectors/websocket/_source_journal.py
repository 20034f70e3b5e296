"""``ws.source``'s journal: open it, feed the intake from it, replay, prune.

`_Journaling` is the journal half of
`connectors.websocket.source.WebSocketSource` (a mixin over the source's own
state). With a ``journal``, frames are made durable in
`connectors.websocket._journal.Journal` before they are decoded; after a
restart the frames the checkpoint did not cover are replayed (`_replay`)
before live ones, and each committed epoch prunes what the previous commit
had handed on (`_committed`).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from ._intake import BATCH, BATCH_BYTES
from ._journal import Journal

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator, Coroutine

    from flowstream import NodeContext, NodeState

    from .._records import BadRecord
    from ._budget import Budget
    from ._intake import _Intake
    from ._journal import Row
    from ._source_config import WebSocketSourceConfig


class _Journaling:
    """The journal half of ``ws.source``; the source itself holds the state."""

    config: WebSocketSourceConfig
    _budget: Budget
    _ctx: NodeContext | None
    _failure: Exception | None
    _intake: _Intake
    _journal: Journal | None
    _prune_floor: int
    _pruned_to: int
    _replay_until: int
    _replayed_frames: int
    _state: NodeState
    _tasks: list[asyncio.Task[None]]

    if TYPE_CHECKING:

        def _decode(self, frame: bytes | str) -> tuple[list[Any], list[BadRecord]]: ...

        def _note(self, frame_id: int) -> None: ...

        def _reject(self, bad: list[BadRecord], peer: str) -> None: ...

    async def _open_journal(
        self, ctx: NodeContext, path: str, group: asyncio.TaskGroup
    ) -> None:
        if not ctx.checkpointing:
            msg = (
                f"journal {path!r} needs stream mode with a checkpoint store "
                "(checkpoint: {path: ...}): only checkpoints say which frames "
                "the graph has taken, so without them it would never be pruned"
            )
            raise ValueError(msg)
        config = self.config
        journal = self._journal = Journal(
            path, max_frames=config.journal_max_frames, max_bytes=config.queue_bytes
        )
        self._budget.watch(journal)
        after = self._state.get("journal_id", 0)
        opened = await journal.open(after)
        backlog = opened.backlog
        self._replay_until = opened.last_id
        resumes = config.resume_query is not None or config.resume_message is not None
        if opened.pruned_past and resumes:
            # The frames right after the checkpoint are gone, and replaying
            # later ones would move the sequence past them: the server
            # resends everything after the checkpointed sequence instead.
            self._replay_until, backlog = after, 0
        self._prune_floor = self._pruned_to = after
        ctx.on_commit(self._committed)
        for work in (journal.write(), journal.deliver(self._put_journaled)):
            self._tasks.append(group.create_task(self._journaling(work)))
        data = {
            "path": path,
            "after": after,
            "replay": backlog,
            "pruned": opened.pruned,
            "pruned_past": opened.pruned_past,
            "unclean": opened.unclean,
            "max_unjournaled": config.journal_max_frames,
        }
        ctx.event("journal_opened", data)
        if opened.unclean:
            ctx.logger.warning(
                "journal %s was left open by its last run (a crash?): it may "
                "have lost up to %s frames it had read but not yet journaled, "
                "plus what its connections had buffered",
                path,
                opened.lost_at_most,
                extra={"path": path, "lost_at_most": opened.lost_at_most},
            )
        if opened.behind:
            ctx.logger.warning(
                "journal %s ends before frame %d, which the checkpoint covers: "
                "it is not the journal the checkpoint was taken with",
                path,
                after,
            )
        if opened.pruned_past:
            self._warn_pruned_past(ctx, path, after, opened.pruned_past, resumes)
        if backlog:
            ctx.logger.info(
                "journal %s: replaying %d frames after frame %d",
                path,
                backlog,
                after,
            )

    def _warn_pruned_past(
        self, ctx: NodeContext, path: str, after: int, upto: int, resumes: bool
    ) -> None:
        head = (
            f"journal {path} was pruned up to frame {upto}, past frame {after} "
            "that the checkpoint covers: it is newer than the checkpoint store "
            "(a store restored from an older copy, or copied before the journal)"
        )
        if resumes:
            seq = self._state.get("seq")
            ctx.logger.warning(
                "%s; not replaying it: resuming from the server after "
                "sequence %s instead",
                head,
                seq,
                extra={"path": path, "after": after, "pruned_past": upto},
            )
        else:
            ctx.logger.warning(
                "%s; frames %d to %d are lost",
                head,
                after + 1,
                upto,
                extra={"path": path, "lost": upto - after},
            )

    async def _journaling(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # reported by execute, never to the group
            self._failure = exc
            self._intake.close()
            if self._journal is not None:
                self._journal.close()

    async def _put_journaled(self, row: Row) -> bool:
        frame_id, frame, peer = row
        entry = (frame, peer, frame_id)
        size = len(frame)
        intake = self._intake
        return intake.offer(entry, size) or await intake.put(entry, size)

    async def _replay(self, journal: Journal) -> AsyncGenerator[list[Any], None]:
        """The records of the journaled frames the checkpoint did not cover."""
        after, until = self._state.get("journal_id", 0), self._replay_until
        decode = self._decode
        batch: list[Any] = []
        batch_bytes = 0
        while after < until:
            rows = await journal.read(after, until, BATCH)
            if not rows:
                break
            for frame_id, frame, peer in rows:
                good, bad = decode(frame)
                self._replayed_frames += 1
                after = frame_id
                batch += good
                batch_bytes += len(frame)
                if bad:
                    self._reject(bad, peer)
                    self._note(frame_id)
                    yield batch
                    batch, batch_bytes = [], 0
                elif len(batch) >= BATCH or batch_bytes >= BATCH_BYTES:
                    self._note(frame_id)
                    yield batch
                    batch, batch_bytes = [], 0
            self._note(after)
            if batch:
                yield batch
                batch, batch_bytes = [], 0

    async def _committed(self, epoch: int) -> None:
        """Prune the journal: epoch ``epoch`` covers what the last commit saw.

        A source cannot tell which of its offsets a snapshot caught (the
        executor may take it while the source waits on its input, and a
        barrier hook would stop that), but it was taken after the previous
        commit, when the state already covered ``_prune_floor``.
        """
        journal = self._journal
        assert journal is not None
        upto, self._prune_floor = self._prune_floor, self._state.get("journal_id", 0)
        if upto <= self._pruned_to:
            return
        try:
            await journal.prune(upto)
        except sqlite3.Error as exc:
            assert self._ctx is not None
            self._ctx.logger.warning(
                "journal %s: cannot prune it (%s); retrying at the next checkpoint",
                self.config.journal,
                exc,
            )
            return
        self._pruned_to = upto
