"""`RayExecutor`: the `Executor` that runs a plan on Ray actors.

The expanded graph is cut into slots (`slots`), and each slot runs in one
async Ray actor (`actor.SlotActor`) with the local executor; edges between
slots carry MessagePack micro-batches within a credit window (`edges`). The
driver only places the actors, wires them, polls their counters and gathers
their results: the outputs of every slot, merged by declared node.

A failure in one slot fails the run and cancels the others; an actor that
dies fails the run naming its nodes.

Under checkpoints (stream mode) the driver is the run's one coordinator
(`checkpoints`): it owns the store, starts every epoch in every slot,
commits it once every slot sent its snapshot, then lets the sinks commit.
An actor that dies then rolls the whole graph back: every actor is torn
down and the run starts again, in new actors, from the last committed epoch
(at most ``checkpoint.max_restarts`` times in a row, each one a
``run.rolled_back`` event). A node that fails under ``retry_workflow``
starts the run again from that epoch too, as a new attempt (`retries`).
In DAG mode the driver records the nodes the slots completed (`dag`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import ray

from ...core.events import NodeEvent, NodeStats, WorkflowCompleted, WorkflowStarted
from ...core.workflow import Checkpoint, RetryWorkflow
from ...errors import FlowstreamError
from ..checkpointing.poison import Poison, count_failure, poison_for, refusal
from ..checkpointing.records import AlreadyCompleted, workflow_key
from ..checkpointing.rescale import RescaleError, announce_moves, layout_states, restore
from ..checkpointing.store import CheckpointStore
from ..result import RunResult, RunStatus
from . import pool
from .actor import SlotActor
from .checkpoints import NAMESPACE, Checkpoints, actor_name, fence
from .dag import DagCheckpoints, run_dag
from .health import watch_health
from .nodetypes import node_types
from .probe import poll_samples
from .retries import announce_retry, may_retry
from .slots import slots_of

if TYPE_CHECKING:
    from ..channel import ChannelStatistics
    from ..events import EventBus
    from ..options import RunOptions
    from ..validation import Graph

__all__ = ["RayBackendError", "RayExecutor", "ensure_ray"]

_POLL_S = 0.5


class RayBackendError(FlowstreamError, ValueError):
    """The workflow asks for what the Ray backend cannot do (the caller's fault)."""


def ensure_ray(address: str | None) -> None:
    """Join ``address``, or start a local Ray with this machine's cores.

    Does nothing when this process has already joined a Ray cluster.
    """
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, include_dashboard=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False)


_RemoteSlot = ray.remote(SlotActor)


async def _reused_or_new(
    slots: int, workflow: bytes, types: Any, options: dict[str, Any], reuse: bool
) -> list[Any]:
    """An anonymous actor for each slot: an idle one (`pool`) or a new one."""
    actors = []
    for i in range(slots):
        actor = await _reused(workflow, types, i, options) if reuse else None
        if actor is None:
            actor = _RemoteSlot.options(name=None).remote(workflow, types, i, options)
        actors.append(actor)
    return actors


async def _reused(
    workflow: bytes, types: Any, slot: int, options: dict[str, Any]
) -> Any | None:
    """An idle actor assigned to ``slot`` of this run, or None if none can be."""
    while (actor := pool.take()) is not None:
        try:
            await actor.assign.remote(workflow, types, slot, options)
        except ray.exceptions.RayError:
            # Died while idle, or cannot take this run (a new actor then
            # names why): drop it and try the next.
            ray.kill(actor)
        else:
            return actor
    return None


class RayExecutor:
    """Runs one plan once on Ray; make a new one for each run.

    Raises:
        RayBackendError: The credit window or the health timeout is not a
            positive number, or a node type cannot be sent to the workers.
    """

    def __init__(self, graph: Graph, bus: EventBus, options: RunOptions) -> None:
        wf = graph.workflow
        self.mode = options.mode or wf.mode
        if options.credit_window < 1:
            msg = f"credit_window must be >= 1, got {options.credit_window}"
            raise RayBackendError(msg)
        if not 0 < options.health_timeout_s < math.inf:
            msg = (
                "health_timeout_s must be a finite number of seconds > 0, "
                f"got {options.health_timeout_s}"
            )
            raise RayBackendError(msg)
        self.graph = graph
        self.bus = bus
        self.options = options
        self.run_id = uuid.uuid4().hex[:12]
        try:
            self._types = node_types(graph, ray.cloudpickle.dumps)
        except TypeError as exc:
            raise RayBackendError(str(exc)) from None
        slots = slots_of(graph)
        self.slots = max(slots.values(), default=0) + 1
        self._nodes_of = [
            [gid for gid, s in slots.items() if s == i] for i in range(self.slots)
        ]
        self._actors: list[Any] = []
        self._stats: dict[str, NodeStats] = {}
        self._channels: dict[tuple[str, str], ChannelStatistics] = {}
        self._stopping = False
        self._cancelled: str | None = None
        self._aborted = False  # cancelled by the caller (no more attempts)
        self._died: str | None = None
        self._cause: str | None = None  # the first failure not a consequence
        self._dead_slot = 0
        self._started = False
        self._poison: Poison = {}  # under checkpoints: `checkpointing.poison`
        self._failed_on: tuple[str, Any] | None = None  # the record a slot failed on
        self.timings: dict[str, float] = {}
        """After a run: ``place_s`` (starting and wiring the actors) and
        ``run_s`` (from `WorkflowStarted` to the last slot's end)."""

    # --- the protocol ----------------------------------------------------------------

    async def run(self) -> RunResult:
        """Place the slots, run them to the end, and merge their results.

        Under checkpoints, against the store: resumed from its last epoch,
        and rolled back to the last epoch when an actor dies.
        """
        ensure_ray(self.options.ray_address)
        checkpoints = self._checkpoint_policy()
        if checkpoints is None:
            return await self._attempts()
        path, interval_ms, policy = checkpoints
        if self.mode == "dag":
            return await run_dag(self, path, interval_ms)
        async with CheckpointStore(path, interval_ms) as store:
            key = workflow_key(self.graph.workflow)
            try:
                await store.begin(
                    key, self.graph.workflow.name, fresh=self.options.fresh
                )
            except AlreadyCompleted as done:
                return self._finish(
                    RunResult(run_id=self.run_id, status="completed", skipped=str(done))
                )
            refused, self._poison = await poison_for(store, key, self.graph, policy)
            if refused is not None:
                await store.finish(key, "failed")
                error = refusal(refused)
                return self._finish(
                    RunResult(run_id=self.run_id, status="failed", error=error)
                )
            started = time.perf_counter()
            restarts = retries = 0
            while True:
                epoch, stored = await store.latest_epoch(key)
                try:
                    # The same restore as the local backend's: state moves by
                    # key group when the parallelism changed since the epoch.
                    restored = restore(self.graph, stored, epoch)
                except RescaleError as exc:
                    await store.finish(key, "failed")
                    return self._finish(
                        RunResult(run_id=self.run_id, status="failed", error=str(exc))
                    )
                ckpt = Checkpoints(
                    store,
                    key,
                    interval_ms / 1000.0,
                    epoch,
                    restored.states,
                    layout_states(restored.layout),
                )
                announce_moves(self.bus, self.run_id, restored.moved)
                self._forget_failures()
                result = await self._attempt(ckpt)
                wf = self.graph.workflow
                if self._stopping or self._aborted:
                    break
                if self._died is None and may_retry(wf, result, retries):
                    # A node failed: a new attempt from the last epoch.
                    retries += 1
                    self._finish(result)
                    announce_retry(self.bus, wf, result, retries, ckpt.committed)
                    self.run_id, self._started = uuid.uuid4().hex[:12], False
                    continue
                if self._died is None or restarts >= policy.max_restarts:
                    break
                restarts += 1
                self._rolled_back(restarts, policy.max_restarts, ckpt.committed)
            result.attempts = restarts + retries + 1
            result.duration_s = time.perf_counter() - started
            if result.status == "failed" and self._failed_on is not None:
                result.error = await count_failure(
                    store, key, self.graph, policy, self._failed_on, result.error or ""
                )
            if result.status == "completed" and self._stopping:
                status = "stopped"  # drained on request: a restart resumes it
            else:
                status = result.status
            await store.finish(key, status)
        return self._finish(result)

    async def _attempts(self, ckpt: DagCheckpoints | None = None) -> RunResult:
        """Run (a DAG: under ``ckpt``); ``retry_workflow`` runs it again if it fails.

        Each attempt is a run of its own (a new run id, its own start and
        end events) in new actors, as on the local backend; a stop or a
        cancel ends the retries. Under ``ckpt`` an attempt does not call
        the nodes an earlier one completed (a `RunRestarted` says so).
        """
        policy = self.graph.workflow.error_handling
        attempts = policy.max_attempts if isinstance(policy, RetryWorkflow) else 1
        result = self._finish(await self._attempt(ckpt))
        attempt = 1
        while (
            result.status == "failed"
            and attempt < attempts
            and not (self._stopping or self._aborted)
        ):
            attempt += 1
            if ckpt is not None:
                announce_retry(self.bus, self.graph.workflow, result, attempt - 1, None)
            self.run_id = uuid.uuid4().hex[:12]
            self._forget_failures()
            self._started = False
            result = self._finish(await self._attempt(ckpt))
        result.attempts = attempt
        return result

    def _forget_failures(self) -> None:
        """Before another attempt: what ended the last one is not this one's."""
        self._died, self._cancelled = None, None
        self._cause, self._failed_on = None, None

    def _checkpoint_policy(self) -> tuple[str, float, Checkpoint] | None:
        """Where and how often this run checkpoints (None: it does not)."""
        declared = self.graph.workflow.checkpoint
        path = self.options.checkpoint
        interval = self.options.checkpoint_interval_ms
        if path is None and declared is not None:
            path, interval = str(declared.path), declared.interval_ms
        if path is None:
            return None
        return str(path), interval, declared or Checkpoint(path=path)

    def _rolled_back(self, restart: int, limit: int, epoch: int) -> None:
        """Say that the run starts again from ``epoch`` (a ``run.rolled_back`` event).

        Like the CLI's ``run.restarted``: a `NodeEvent` of no node.
        """
        self.bus.emit(
            NodeEvent,
            self.run_id,
            node_id="",
            name="run.rolled_back",
            data={
                "restart": restart,
                "max_restarts": limit,
                "epoch": epoch,
                "nodes": self._nodes_of[self._dead_slot],
                "error": self._died,
            },
        )

    async def _attempt(self, ckpt: Checkpoints | DagCheckpoints | None) -> RunResult:
        """Place the slots in new actors and run them once to the end."""
        start = time.perf_counter()
        workflow = msgspec.json.encode(self.graph.workflow)
        types = self._types
        options = {
            "mode": self.mode,
            "fuse": self.options.fuse,
            "max_parallel": self.options.max_parallel,
            "capacity": self.options.capacity,
            "drain_timeout": self.options.drain_timeout,
            "max_dead_letters": self.options.max_dead_letters,
            "sample_outputs": self.options.output_probe is not None,
        }
        if ckpt is None:
            self._actors = await _reused_or_new(
                self.slots, workflow, types, options, self.options.reuse_actors
            )
        else:
            # Named, so that a later attempt (or driver) finds and kills
            # them first: see `checkpoints.fence`.
            try:
                await fence(ckpt.run_key)
            except RuntimeError as exc:
                return RunResult(run_id=self.run_id, status="failed", error=str(exc))
            attempt = uuid.uuid4().hex[:8]
            self._actors = [
                _RemoteSlot.options(
                    name=actor_name(ckpt.run_key, attempt, i), namespace=NAMESPACE
                ).remote(workflow, types, i, options)
                for i in range(self.slots)
            ]
        completed = False
        try:
            try:
                token = secrets.token_bytes(16)
                addresses = await asyncio.gather(
                    *(a.listen.remote(token) for a in self._actors)
                )
                await asyncio.gather(
                    *(
                        a.prepare.remote(
                            addresses,
                            token,
                            self.options.credit_window,
                            None if ckpt is None else ckpt.restored(self._nodes_of[i]),
                            self._poison,
                        )
                        for i, a in enumerate(self._actors)
                    )
                )
            except ray.exceptions.RayError as exc:
                # A worker that cannot import a module the workflow names, or
                # a cluster that cannot place the actors.
                error = f"the Ray workers could not set up the run: {exc}"
                return RunResult(run_id=self.run_id, status="failed", error=error)
            if self._aborted:  # cancelled while the actors were placed
                return RunResult(run_id=self.run_id, status="cancelled")
            placed = time.perf_counter()
            self.timings["place_s"] = placed - start
            if not self._started:
                self._started = True
                self.bus.emit(
                    WorkflowStarted,
                    self.run_id,
                    workflow=self.graph.workflow.name,
                    mode=self.mode,
                    nodes=len(self.graph.nodes),
                )
            results = await self._run_slots(ckpt)
            self.timings["run_s"] = time.perf_counter() - placed
            completed = all(r.status == "completed" for r in results)
        finally:
            reusable = ckpt is None and self.options.reuse_actors
            if completed and reusable and not self._aborted:
                pool.give_back(self._actors)
                self._actors = []  # a stop or cancel now is not for their next run
            else:
                for a in self._actors:
                    ray.kill(a)
        return self._merge(results, time.perf_counter() - start)

    def _finish(self, result: RunResult) -> RunResult:
        self.bus.emit(
            WorkflowCompleted,
            self.run_id,
            status=result.status,
            duration_s=result.duration_s,
            error=result.error,
        )
        return result

    def stop(self) -> None:
        """Stop gracefully (the sources end, the rest drains); again: cancel."""
        if self._stopping:
            self.cancel()
            return
        self._stopping = True
        for a in self._actors:
            a.stop.remote()

    def cancel(self) -> None:
        """Cancel every slot now; the result says ``cancelled``."""
        self._aborted = True
        self._cancelled = self._cancelled or "cancelled"
        for a in self._actors:
            a.cancel.remote()

    def statistics(self) -> dict[str, NodeStats]:
        """Each node's counters as last polled (every half second)."""
        return dict(self._stats)

    def channel_statistics(self) -> dict[tuple[str, str], ChannelStatistics]:
        """Each input channel's fill as last polled."""
        return dict(self._channels)

    async def edge_meters(self) -> dict[int, tuple[int, int, int]]:
        """Per edge between processes: (batches, bytes, most frames un-acked).

        Only while the run's actors live (tests read it from a slow sink).
        """
        found: dict[int, tuple[int, int, int]] = {}
        for part in await asyncio.gather(
            *(a.edge_meters.remote() for a in self._actors)
        ):
            found.update(part)
        return found

    # --- running -----------------------------------------------------------------

    async def _run_slots(
        self, ckpt: Checkpoints | DagCheckpoints | None
    ) -> list[RunResult]:
        results: list[RunResult | None] = [None] * self.slots

        async def watch(i: int, ref: Any) -> None:
            try:
                result: RunResult = await ref
            except ray.exceptions.RayError as exc:
                nodes = ", ".join(self._nodes_of[i])
                result = RunResult(
                    run_id=self.run_id,
                    status="failed",
                    error=f"the process running {nodes} died: {exc}",
                )
                # The root cause: the other slots then fail sending to it.
                if self._died is None:
                    self._died, self._dead_slot = result.error, i
            results[i] = result
            if result.status != "completed" and self._cancelled is None:
                self._cancelled = result.status
                for a in self._actors:
                    a.cancel.remote()
            if result.status == "failed" and self._died is None:
                # Asked now: the actor is gone after the run.
                with contextlib.suppress(ray.exceptions.RayError):
                    gone, found = await self._actors[i].failure.remote()
                    if not gone:  # the cause, not the slots sending to it
                        self._cause = self._cause or result.error
                        self._failed_on = self._failed_on or found

        async with asyncio.TaskGroup() as tg:
            watchers = [
                tg.create_task(watch(i, a.run.remote()))
                for i, a in enumerate(self._actors)
            ]
            tg.create_task(self._poll(watchers))
            tg.create_task(
                watch_health(
                    self._actors,
                    watchers,
                    self.options.health_timeout_s,
                    self._unresponsive,
                )
            )
            if ckpt is not None:
                tg.create_task(
                    ckpt.coordinate(
                        self._actors,
                        watchers,
                        lambda: self._stopping or self._cancelled is not None,
                    )
                )
        return [r for r in results if r is not None]

    def _unresponsive(self, slot: int, why: str) -> None:
        """Slot ``slot``'s actor stopped answering (`health`): it is dead."""
        if self._died is None:
            nodes = ", ".join(self._nodes_of[slot])
            self._died = f"the process running {nodes} is taken for dead: {why}"
            self._dead_slot = slot
        ray.kill(self._actors[slot])  # its run's watcher then ends the run

    async def _poll(self, watchers: list[asyncio.Task[None]]) -> None:
        probe = self.options.output_probe
        while not all(w.done() for w in watchers):
            if probe is not None:
                await poll_samples(self._actors, probe)
            with contextlib.suppress(ray.exceptions.RayError):
                parts = await asyncio.gather(
                    *(a.statistics.remote() for a in self._actors)
                )
                stats: dict[str, NodeStats] = {}
                channels: dict[tuple[str, str], ChannelStatistics] = {}
                for s, c in parts:
                    stats.update(s)
                    channels.update(c)
                self._stats, self._channels = stats, channels
            await asyncio.wait(watchers, timeout=_POLL_S)
        if probe is not None:
            await poll_samples(self._actors, probe)  # what the last poll missed

    def _merge(self, results: list[RunResult], duration: float) -> RunResult:
        status: RunStatus
        failed = [r for r in results if r.status == "failed"]
        if failed:
            status, error = "failed", self._died or self._cause or failed[0].error
        elif self._cancelled == "cancelled" or any(
            r.status == "cancelled" for r in results
        ):
            status, error = (
                "cancelled",
                next((r.error for r in results if r.error), None),
            )
        else:
            status, error = "completed", None
        outputs: dict[str, dict[str, list[Any]]] = {}
        stats: dict[str, NodeStats] = {}
        merged = RunResult(run_id=self.run_id, status=status, error=error)
        for r in results:
            for gid, ports in r.outputs.items():
                mine = outputs.setdefault(gid, {})
                for port, items in ports.items():
                    mine.setdefault(port, []).extend(items)
            stats.update(r.stats)
            merged.dead_letters.extend(r.dead_letters)
            merged.dead_letters_not_kept += r.dead_letters_not_kept
            for gid, count in r.outputs_dropped.items():
                merged.outputs_dropped[gid] = merged.outputs_dropped.get(gid, 0) + count
        merged.outputs, merged.stats = outputs, stats
        merged.duration_s = duration
        self._stats = stats
        return merged
