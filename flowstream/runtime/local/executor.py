"""The executor: one validated graph, run in DAG-completion or stream mode.

How a graph becomes tasks (see DESIGN.md, "Channels and batching"):

* **Segments.** Nodes are grouped into segments, one task each. A segment is a
  head node followed by a fused chain: 1-in nodes fed only by the previous
  node's ``out``, which feeds nothing else. Inside a segment, batches pass by
  plain calls: consecutive batch kernels run as one loop per batch, user
  generators are composed directly. Between segments, bounded channels carry
  batches; a full channel makes the sender wait (backpressure).
* **Direct calls.** One-shot (``call``-shaped) nodes whose inputs all come from
  other one-shot nodes are not given tasks or channels: a scheduler calls them
  in dependency order as their inputs become ready, and a call gets a task
  only when it actually suspends (`stepping.start_call`).
* **Completion.** Sources end, end-of-stream follows the channels' close
  semantics node by node, and the run ends when every task has. Stream mode
  adds a stop: sources are cancelled and end cleanly, the rest drains within
  ``drain_timeout``; a second stop (or the timeout) cancels everything.

Failures follow each node's `RetryPolicy` and `ErrorHandling`: retried calls,
then either the run fails (``stop_workflow``), the item goes to the node's
``error`` port (``continue_on_error``), or the whole run starts over
(``retry_workflow``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

from ...core.events import (
    NodeCompleted,
    NodeStarted,
    WorkflowCompleted,
    WorkflowStarted,
)
from ...core.node import ERROR_PORT, OUT_PORT
from ...core.workflow import Checkpoint, RetryWorkflow, StopWorkflow
from ...errors import BrokenChannelError
from ..budget import MemoryBudget
from ..channel import ChannelStatistics, open_channel
from ..checkpointing.rescale import Layout
from ..context import NodeRuntime, RunState, State
from ..events import EventBus
from ..options import RunOptions
from ..plan import Plan, plan
from ..result import DeadLetter, RunResult, RunStatus
from ..stepping import Resume, gc_frozen_enter, gc_frozen_exit, gc_paused
from . import collecting, epochs
from .dag import ScheduleRun
from .direct import run_direct
from .failures import Abort, Failures, first_failure
from .fusion import NodeRun, Segment, instance_fields
from .resume import reload_epoch, run_checkpointed
from .segments import run_segment

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from ..checkpointing.completions import CompletionRecorder
    from ..checkpointing.coordinator import Coordinator
    from ..checkpointing.delegated import DelegatedCoordinator
    from ..checkpointing.store import CheckpointStore
    from ..validation import Graph

__all__ = ["WorkflowExecutor"]

SHUTDOWN_TIMEOUT = 5.0


class WorkflowExecutor:
    """Runs one validated `Graph`; make a new executor for each run.

    Args:
        graph: The validated workflow.
        bus: Where the run's events go.
        options: How to run it.
    """

    def __init__(
        self,
        graph: Graph,
        bus: EventBus | None = None,
        options: RunOptions | None = None,
    ) -> None:
        self.graph = graph
        self.bus = bus if bus is not None else EventBus()
        self.options = options or RunOptions()
        self.mode = self.options.mode or graph.workflow.mode
        self.run_id = uuid.uuid4().hex[:12]
        self.plan: Plan = plan(graph, fuse=self.options.fuse)
        self.state = RunState()  # replaced per attempt: a retry starts clean
        self._stopping = False
        self._aborted = False
        self._cancel_reason: str | None = None  # said in the result, if given
        self._main: asyncio.Task[Any] | None = None
        self._sources: list[Segment] = []
        # Checkpointing (DAG mode): the store, this workflow's key in it, and
        # the outputs of one-shot nodes a previous, killed run completed.
        self._store: CheckpointStore | None = None
        self._run_key = ""
        self._restored: dict[str, dict[str, list[Any]]] = {}
        self._completions: CompletionRecorder | None = None  # the store, or for one
        # Stream mode: the last committed epoch and its node states.
        self._epoch = 0
        self._restored_states: dict[str, bytes] = {}
        self._layout = Layout()  # what the epochs record of the parallelism
        self._interval = 1.0
        self._coord: Coordinator | None = None
        # Checkpoints decided by a coordinator in another process.
        self._delegated: DelegatedCoordinator | None = None
        self._segments_left = 0
        self._segments_done = asyncio.Event()
        self._drain_deadline: asyncio.TimerHandle | None = None
        self._nodes: dict[str, NodeRun] = {}
        self._dead_letters: list[DeadLetter] = []
        self._outputs: dict[str, dict[str, list[Any]]] = {}
        self._poison: dict[str, dict[str, str]] = {}
        self._abort: Abort | None = None
        self._schedule_run: ScheduleRun | None = None
        self._budget: MemoryBudget | None = None  # set per attempt

    # --- public ----------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run the graph to the end and return its result.

        A node failure does not raise: the result says ``failed`` and names
        the node. Cancelling the task running this raises as usual.
        """
        path, interval = self.options.checkpoint, self.options.checkpoint_interval_ms
        declared = self.graph.workflow.checkpoint
        if path is None and declared is not None:
            path, interval = declared.path, declared.interval_ms
        if path is None or self._delegated is not None:
            return await self._run_attempts()
        policy = declared or Checkpoint(path=path)
        return await run_checkpointed(self, path, interval, policy)

    async def _run_attempts(self) -> RunResult:
        policy = self.graph.workflow.error_handling
        attempts = policy.max_attempts if isinstance(policy, RetryWorkflow) else 1
        result = await self._run_once()
        attempt = 1
        while result.status == "failed" and attempt < attempts and not self._aborted:
            attempt += 1
            self.run_id = uuid.uuid4().hex[:12]
            await reload_epoch(self)
            result = await self._run_once()
        result.attempts = attempt
        return result

    def checkpoint_under(
        self,
        coord: DelegatedCoordinator,
        epoch: int,
        states: dict[str, bytes],
        poison: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Take stream checkpoints for a coordinator elsewhere (before `run`).

        The run is one part of a graph spread over processes; ``coord`` is
        its coordinator's stand-in here (`checkpointing.delegated`), which
        owns the store. The run starts from the committed ``epoch`` with its
        nodes' ``states`` (0 and none: a fresh start); ``poison``: the
        records its nodes dead-letter (`checkpointing.poison`).
        """
        self._delegated = coord
        self._epoch = epoch
        self._restored_states = states
        self._poison = poison or {}

    def failed_record(self) -> tuple[str, Any] | None:
        """The node and record the last run failed on, if it failed on one."""
        abort = self._abort
        return (
            None if abort is None or not abort.node_id else (abort.node_id, abort.item)
        )

    def failed_with(self) -> BaseException | None:
        """What the node the last run failed on raised, if a node failed."""
        return None if self._abort is None else self._abort.__cause__

    def record_under(
        self, recorder: CompletionRecorder, done: dict[str, dict[str, list[Any]]]
    ) -> None:
        """Record DAG completions into ``recorder`` for a store elsewhere.

        ``done``: the outputs of the nodes a previous run completed, handed
        on without calling them (`checkpointing.completions`).
        """
        self._completions = recorder
        self._restored = done

    def stop(self) -> None:
        """Stop gracefully: sources end, in-flight items drain, hooks run.

        A second call (or the drain timeout) cancels the run at once.
        """
        if self._stopping:
            self.cancel("stopped again while draining: cancelled")
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        if self._coord is not None:
            self._coord.active = False
            self._coord.released.set()  # sources held for an epoch stop now
        for n in self._nodes.values():
            n.rt.stopping.set()
        for seg in self._sources:
            # A source that stops itself (drains what it has taken in) is left
            # to end on its own; the drain deadline still bounds it.
            if seg.pulling is not None and not seg.head.spec.stops_itself:
                seg.pulling.reschedule(loop.time())
        limit = self.options.drain_timeout
        self._drain_deadline = loop.call_later(
            limit, self.cancel, f"drain timed out after {limit:g} s: cancelled"
        )

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the run now; its result says ``cancelled`` (and ``reason``)."""
        self._stopping = True
        if self._main is not None and not self._main.done():
            self._aborted = True
            if self._cancel_reason is None:
                self._cancel_reason = reason
            self._main.cancel()

    def statistics(self) -> dict[str, Any]:
        """Return each node's counters now (for progress displays)."""
        if self._schedule_run is not None:
            return self._schedule_run.all_stats()
        return {nid: n.rt.stats() for nid, n in self._nodes.items()}

    def channel_statistics(self) -> dict[tuple[str, str], ChannelStatistics]:
        """Return every input channel's fill now: ``(node, port) -> stats``.

        Nodes fused into their upstream's task read no channel and are not
        listed; neither are one-shot nodes of a DAG (called directly).
        """
        return {
            (nid, port): recv.statistics()
            for nid, n in list(self._nodes.items())
            for port, recv in list(n.inputs.items())
        }

    # --- one attempt -------------------------------------------------------------

    async def _run_once(self) -> RunResult:
        started = time.perf_counter()
        wf = self.graph.workflow
        self._dead_letters = []
        self._outputs = {}
        self.state = RunState()
        for node_id, blob in self._restored_states.items():
            self.state.nodes[node_id] = State(epochs.decode_state(blob))
        with gc_paused():
            self._build()
        # A DAG run's graph and its per-node objects live until the run
        # ends: keep the cycle collector from walking them again and again
        # meanwhile (a third of a 10,000-node run's time otherwise).
        frozen = self.mode == "dag"
        if frozen:
            gc_frozen_enter()
        self._failures = Failures(self.bus, self.run_id, self.options.sleep)
        self._failures.poison = self._poison
        self._abort = None
        status: RunStatus = "completed"
        error: str | None = None
        initialized: list[NodeRun] = []
        self._main = asyncio.current_task()
        self._budget = None
        try:
            if wf.memory_budget_mb is not None:
                self._budget = MemoryBudget(wf.memory_budget_mb)
            for n in self._nodes.values():
                try:
                    await _bounded(n.instance.initialize(n.rt), None)
                except Exception as exc:
                    text = f"node {n.id!r} ({n.spec.type_id}) failed to start: {exc}"
                    raise Abort(text) from exc
                initialized.append(n)
            # Published once every node is initialized: servers are bound and
            # connectors ready, so a client may connect now.
            self.bus.emit(
                WorkflowStarted,
                self.run_id,
                workflow=wf.name,
                mode=self.mode,
                nodes=len(self._nodes),
            )
            await self._run_tasks()
        except asyncio.CancelledError:
            if not self._aborted:
                raise
            status = "cancelled"
            error = self._cancel_reason or "the run was cancelled"
            self._uncancel()
        except Abort as exc:
            status, error = "failed", str(exc.args[0])
            self._abort = exc
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self._main = None
            if self._drain_deadline is not None:
                self._drain_deadline.cancel()
            await self._shutdown(initialized)
            if frozen:
                gc_frozen_exit()
        for n in self._nodes.values():
            n.rt.ended = n.rt.ended or time.perf_counter()
        stats = self.statistics()
        duration = time.perf_counter() - started
        self.bus.emit(
            WorkflowCompleted,
            self.run_id,
            status=status,
            duration_s=duration,
            error=error,
        )
        return RunResult(
            run_id=self.run_id,
            status=status,
            outputs=self._outputs,
            dead_letters=self._dead_letters,
            dead_letters_not_kept=sum(
                n.rt.dead_letters_not_kept for n in self._nodes.values()
            ),
            outputs_dropped=collecting.dropped(self._nodes.values()),
            stats=stats,
            error=error,
            duration_s=duration,
        )

    def _uncancel(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()

    async def _shutdown(self, nodes: list[NodeRun]) -> None:
        for n in reversed(nodes):
            try:
                await _bounded(n.instance.shutdown(), SHUTDOWN_TIMEOUT)
            except Exception as exc:
                n.rt.logger.warning("shutdown of %s failed: %r", n.id, exc)

    @property
    def _checkpointing(self) -> bool:
        """Whether this stream run takes checkpoints (here or for elsewhere)."""
        return self.mode == "stream" and (
            self._store is not None or self._delegated is not None
        )

    # --- wiring ------------------------------------------------------------------

    def _build(self) -> None:
        self._nodes = {}
        self._schedule_run = None
        schedule = self.plan.schedule
        if schedule is not None and self._completions is None and self.mode == "dag":
            # A plain DAG of calls runs over the plan's flat schedule; only
            # the nodes that need run-time objects (a class to initialize, a
            # ctx) get them now, the rest on first need (a failure).
            for gid, (fn, _) in zip(schedule.ids, schedule.calls, strict=True):
                if fn is None:
                    self._node_run(gid)
            self._schedule_run = ScheduleRun(self, schedule)
            return
        for gid in self.graph.nodes:
            self._node_run(gid)
        nodes = self._nodes
        for gid in self.plan.direct:  # topological order: producers come first
            n = nodes[gid]
            n.direct = True
            n.waiting = len(n.gnode.inbound)
            for c in n.gnode.inbound:
                nodes[c.from_node].direct_targets.append(
                    (n, c.to_port, c.from_port == OUT_PORT)
                )

    def _node_run(self, gid: str) -> NodeRun:
        """The node's run-time objects, made on first need."""
        n = self._nodes.get(gid)
        if n is not None:
            return n
        g = self.graph.nodes[gid]
        rt = NodeRuntime(
            run_id=self.run_id,
            node_id=gid,
            node_type=g.spec.type_id,
            run_state=self.state,
            bus=self.bus,
            dead_letters=self._dead_letters,
            max_kept=self.options.max_dead_letters,
            error_connected=any(c.from_port == ERROR_PORT for c in g.outbound),
            **instance_fields(self.graph, g),
        )
        if self._checkpointing:
            rt.checkpointing = True
            rt.restored_epoch = self._epoch
        n = self._nodes[gid] = NodeRun(
            gnode=g,
            rt=rt,
            instance=g.spec.create(g.config),
            retry=g.decl.retry,
            handling=g.decl.error_handling
            or self.graph.workflow.error_handling
            or StopWorkflow(),
        )
        rt.outlets = n.sends  # filled by _wire
        rt.coalesce = g.spec.coalesce
        return n

    def _wire(self) -> None:
        """Open the plan's channels; give each producer its own send clone."""
        nodes = self._nodes
        for ch in self.plan.channels:
            send, recv = open_channel[Any](
                ch.capacity if ch.capacity is not None else self.options.capacity
            )
            nodes[ch.node].inputs[ch.port] = recv
            for from_node, from_port in ch.producers:
                nodes[from_node].sends.setdefault(from_port, []).append(send.clone())
            send.close()
        if self.mode != "dag":
            for n in nodes.values():
                if n.spec.type_id == "sink.collect":
                    self._collect_unconnected(n)
            return
        for n in nodes.values():
            # Nothing emitted on a port without a connection is lost.
            self._collect_unconnected(n)

    def _collect_unconnected(self, n: NodeRun) -> None:
        if n.gnode.internal:
            return  # a partition step of a parallel node: nothing is an output
        connected = {c.from_port for c in n.gnode.outbound}
        unconnected = [
            p for p in n.gnode.outputs if p not in connected and p != ERROR_PORT
        ]
        if unconnected:
            # The instances of a parallel node share the declared node's lists.
            n.collect = self._outputs.setdefault(n.gnode.instance_of or n.id, {})
            n.max_collected = collecting.bound(n, self.mode)
            for p in unconnected:
                n.collect.setdefault(p, [])

    # --- running -----------------------------------------------------------------

    async def _run_tasks(self) -> None:
        if self._schedule_run is not None:
            try:
                await self._schedule_run.run()
            except BaseExceptionGroup as group:
                first = first_failure(group)
                raise first from first.__cause__  # its own cause, not the group
            return
        nodes = self._nodes
        segments = [
            Segment(
                head=nodes[sp.head],
                chain=[nodes[gid] for gid in sp.chain],
                is_source=sp.is_source,
            )
            for sp in self.plan.segments
        ]
        self._coord = None
        if self._checkpointing and segments:
            # Refuses what it cannot checkpoint.
            self._coord = epochs.coordinator(self, segments)
            if self._epoch == 0:
                await epochs.initial_checkpoint(self, self._coord)
        with gc_paused():
            self._wire()
        self._sources = [seg for seg in segments if seg.is_source]
        self._segments_left = len(segments)
        self._segments_done = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                if self._coord is not None:
                    tg.create_task(
                        epochs.coordinate(self, self._coord), name="checkpoints"
                    )
                for seg in segments:
                    tg.create_task(
                        run_segment(self, seg), name=f"segment:{seg.head.id}"
                    )
                if any(n.direct for n in self._nodes.values()):
                    tg.create_task(run_direct(self), name="direct-calls")
        except BaseExceptionGroup as group:
            first = first_failure(group)
            raise first from first.__cause__  # its own cause, not the group
        finally:
            self._close_all()
        if self._coord is not None:
            await epochs.final_checkpoint(self, self._coord)

    def _close_all(self) -> None:
        for n in self._nodes.values():
            for sends in n.sends.values():
                for s in sends:
                    s.close()
            for r in n.inputs.values():
                r.close()

    async def _deliver(
        self, n: NodeRun, port: str, batch: list[Any], *, counted: bool = False
    ) -> None:
        """Send a batch from ``n``'s ``port`` to every consumer, or collect it."""
        if not batch:
            return
        if not counted:
            n.rt.items_out += len(batch)
        sends = n.sends.get(port)
        if sends:
            # Fan-out hands the same list to every branch: items are immutable
            # once emitted. The slowest consumer sets the pace.
            broken = None
            for s in sends:
                try:
                    await s.send(batch)
                except BrokenChannelError:
                    # That consumer finished early (a zip whose other input
                    # ended): it wants no more, which is not a failure.
                    broken = [*(broken or ()), s]
            for s in broken or ():
                sends.remove(s)
                s.close()
        elif n.collect is not None and port in n.collect:
            collecting.keep(self, n, port, batch)

    async def _flush_side(self, n: NodeRun) -> None:
        if n.rt.pending:
            pending, n.rt.pending = n.rt.pending, {}
            for port, items in pending.items():
                await self._deliver(n, port, items)

    # --- events --------------------------------------------------------------------

    def _node_started(self, n: NodeRun) -> None:
        n.rt.started = time.perf_counter()
        if self.bus.active:
            self._publish_started(n)

    def _publish_started(self, n: NodeRun) -> None:
        self.bus.emit(
            NodeStarted,
            self.run_id,
            node_id=n.id,
            node_type=n.spec.type_id,
            **n.rt.where,
        )

    def _node_completed(self, n: NodeRun) -> None:
        n.rt.ended = time.perf_counter()
        if self.bus.active:
            self._publish_completed(n)

    def _publish_completed(self, n: NodeRun) -> None:
        self.bus.emit(
            NodeCompleted,
            self.run_id,
            node_id=n.id,
            node_type=n.spec.type_id,
            stats=n.rt.stats(),
            **n.rt.where,
        )


async def _bounded(coro: Coroutine[Any, Any, Any], limit: float | None) -> None:
    """Await a lifecycle hook; only one that suspends pays for a timeout scope.

    Most hooks (every function node's) finish at their first step, and a
    timeout scope per node would cost more than the rest of a DAG node's run.
    """
    try:
        signal = coro.send(None)
    except StopIteration:
        return
    async with asyncio.timeout(limit):
        await Resume(coro, signal)
