"""Checkpointed DAG runs on Ray: completed nodes recorded in the driver's store.

The same contract as the local backend (docs/reliability.md, "DAG mode:
resume"): each one-shot node's outputs are recorded when it completes,
committed every ``interval_ms``; a run that was killed or failed, run again
with the same store, hands them on without calling those nodes again; a run
that completed is not run again (``fresh`` starts it over).

Only the driver opens the store (no shared file system). Each slot's
executor records its completions for it (`checkpointing.completions`); the
driver takes them from every actor with a long poll (``taken``) while the
slots run, records them in the store and commits them on the store's
interval, and once after the slots end. A later attempt of the same run
(``retry_workflow``) or a later driver hands every slot its share of what
was recorded. The outputs of a parallel node's instances are not handed on
(they hold for the items their instance got, which depends on how many
there are): they are computed again, as locally.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import ray

from ..checkpointing.completions import decode_outputs, encode_outputs
from ..checkpointing.records import AlreadyCompleted, workflow_key
from ..checkpointing.store import CheckpointStore
from ..result import RunResult

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..validation import Graph
    from .executor import RayExecutor

__all__ = ["DagCheckpoints", "run_dag"]


async def run_dag(ex: RayExecutor, path: str, interval_ms: float) -> RunResult:
    """Run ``ex``'s DAG against the store at ``path`` (see the module docstring)."""
    wf = ex.graph.workflow
    async with CheckpointStore(path, interval_ms) as store:
        key = workflow_key(wf)
        try:
            done = await store.begin(key, wf.name, fresh=ex.options.fresh)
        except AlreadyCompleted as exc:
            skipped = RunResult(run_id=ex.run_id, status="completed", skipped=str(exc))
            return ex._finish(skipped)
        ckpt = DagCheckpoints(store, key, ex.graph, done)
        result = await ex._attempts(ckpt)
        if result.status == "completed" and ex._stopping:
            status = "stopped"
        else:
            status = result.status
        await store.finish(key, status)
    return result


class DagCheckpoints:
    """A checkpointed DAG run on Ray: the store and the nodes completed so far.

    Args:
        store: The open checkpoint store.
        run_key: The run's key in it.
        graph: The expanded graph.
        done: The outputs of the nodes a previous run completed, by node id.
    """

    def __init__(
        self,
        store: CheckpointStore,
        run_key: str,
        graph: Graph,
        done: dict[str, dict[str, list[Any]]],
    ) -> None:
        self.store = store
        self.run_key = run_key
        self.graph = graph
        self.done: dict[str, bytes] = {}
        """What each completed node emitted (MessagePack), by node id."""
        for node_id, outputs in done.items():
            if self._handed_on(node_id):
                self.done[node_id] = encode_outputs(outputs)

    def _handed_on(self, node_id: str) -> bool:
        """Whether a recorded node is handed on (a node of this graph, no instance)."""
        g = self.graph.nodes.get(node_id)
        return g is not None and g.instance_of in (None, node_id)

    def restored(self, nodes: Sequence[str]) -> tuple[int, dict[str, bytes]]:
        """The completed outputs of ``nodes`` (one slot's share); epoch 0."""
        mine = set(nodes)
        return 0, {k: v for k, v in self.done.items() if k in mine}

    async def coordinate(
        self,
        actors: list[Any],
        runs: Sequence[asyncio.Task[None]],
        stopping: Callable[[], bool],
    ) -> None:
        """Take every slot's completions into the store until the slots end.

        (``runs`` and ``stopping`` are the stream coordinator's: a slot's
        ``taken`` ends with its run, or raises if its actor died.)
        """
        try:
            async with asyncio.TaskGroup() as tg:
                for actor in actors:
                    tg.create_task(self._take(actor))
        finally:
            await self.store.commit()

    async def _take(self, actor: Any) -> None:
        while True:
            try:
                taken = await actor.taken.remote()
            except ray.exceptions.RayError:
                return  # it died: its run's watcher says so
            if taken is None:
                return
            for node_id, blob in taken:
                self.store.record(self.run_key, node_id, decode_outputs(blob))
                if self._handed_on(node_id):
                    self.done[node_id] = blob  # a retry does not call it again
            await self.store.maybe_commit()
