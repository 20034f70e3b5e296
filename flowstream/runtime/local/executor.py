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
import contextlib
import time
import uuid
from collections import Counter
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ...core.events import (
    NodeCompleted,
    NodeStarted,
    WorkflowCompleted,
    WorkflowStarted,
)
from ...core.node import ERROR_PORT, OUT_PORT
from ...core.workflow import (
    Checkpoint,
    RetryWorkflow,
    StopWorkflow,
)
from ...errors import BrokenChannelError
from ..budget import MemoryBudget
from ..channel import (
    ChannelStatistics,
    Control,
    open_channel,
)
from ..checkpointing.store import (
    AlreadyCompleted,
    CheckpointStore,
    Coordinator,
    PoisonRecord,
    workflow_key,
)
from ..context import NodeRuntime, RunState, State
from ..events import EventBus
from ..feeds import AligningFeed, BatchFeed, ChannelFeed
from ..options import RunOptions
from ..plan import Plan, plan
from ..result import DeadLetter, RunResult, RunStatus
from ..stepping import Resume, gc_frozen_enter, gc_frozen_exit, gc_paused, rebatch
from . import epochs, stages
from .dag import ScheduleRun
from .direct import run_direct
from .failures import Abort, Failures
from .fusion import NodeRun, Segment

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    from ..validation import Graph

__all__ = ["WorkflowExecutor"]

SHUTDOWN_TIMEOUT = 5.0
YIELD_EVERY = 0.01


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
        # Stream mode: the last committed epoch and its node states.
        self._epoch = 0
        self._restored_states: dict[str, bytes] = {}
        self._interval = 1.0
        self._coord: Coordinator | None = None
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
        if path is None:
            return await self._run_attempts()
        policy = declared or Checkpoint(path=path)
        async with CheckpointStore(path, interval) as store:
            key = workflow_key(self.graph.workflow)
            try:
                self._restored = await store.begin(
                    key, self.graph.workflow.name, fresh=self.options.fresh
                )
            except AlreadyCompleted as done:
                return self._skipped(str(done))
            self._epoch, self._restored_states = await store.latest_epoch(key)
            self._store = store
            self._run_key = key
            self._interval = interval / 1000.0
            poison = [
                p for p in await store.failures(key) if p.count >= policy.max_restarts
            ]
            if poison and policy.poison == "stop":
                result = self._refused(poison[0])
            else:
                for p in poison:
                    self._poison.setdefault(p.node_id, {})[p.fingerprint] = (
                        f"failed {p.count} runs ({p.reason})"
                    )
                result = await self._run_attempts()
                await self._count_failure(store, key, policy, result)
            if result.status == "completed" and self._stopping:
                status = "stopped"  # drained on request: a restart resumes it
            else:
                status = result.status
            await store.finish(key, status)
            return result

    async def _count_failure(
        self,
        store: CheckpointStore,
        key: str,
        policy: Checkpoint,
        result: RunResult,
    ) -> None:
        """A run failed on a record: count it; say so once it is a poison record."""
        abort = self._abort
        if result.status != "failed" or abort is None or not abort.node_id:
            return
        count = await store.record_failure(
            key, abort.node_id, abort.item, result.error or ""
        )
        if count >= policy.max_restarts:
            then = (
                "refuse to run"
                if policy.poison == "stop"
                else "send it to the dead letters"
            )
            result.error = (
                f"{result.error} — this record has now failed {count} runs at "
                f"node {abort.node_id!r}: a restart will {then}"
            )

    def _skipped(self, why: str) -> RunResult:
        """The result of a run the store says completed before: nothing ran."""
        self.bus.publish(
            WorkflowCompleted(
                run_id=self.run_id,
                timestamp=time.time(),
                status="completed",
                duration_s=0.0,
            )
        )
        return RunResult(run_id=self.run_id, status="completed", skipped=why)

    def _refused(self, poison: PoisonRecord) -> RunResult:
        """The result of a run that a poison record keeps from starting."""
        error = (
            f"poison record at node {poison.node_id!r}: it failed the last "
            f"{poison.count} runs ({poison.reason}); record: {poison.record}. "
            "Fix the node or the data and run `flowstream checkpoints STORE "
            "--forget-failures`, or set checkpoint.poison: dead_letter to "
            "send it to the dead letters and go on"
        )
        self.bus.publish(
            WorkflowCompleted(
                run_id=self.run_id,
                timestamp=time.time(),
                status="failed",
                duration_s=0.0,
                error=error,
            )
        )
        return RunResult(
            run_id=self.run_id,
            status="failed",
            outputs={},
            dead_letters=[],
            stats={},
            error=error,
            duration_s=0.0,
        )

    async def _run_attempts(self) -> RunResult:
        policy = self.graph.workflow.error_handling
        attempts = policy.max_attempts if isinstance(policy, RetryWorkflow) else 1
        result = await self._run_once()
        attempt = 1
        while result.status == "failed" and attempt < attempts and not self._aborted:
            attempt += 1
            self.run_id = uuid.uuid4().hex[:12]
            result = await self._run_once()
        result.attempts = attempt
        return result

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
            self.bus.publish(
                WorkflowStarted(
                    run_id=self.run_id,
                    timestamp=time.time(),
                    workflow=wf.name,
                    mode=self.mode,
                    nodes=len(self._nodes),
                )
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
        self.bus.publish(
            WorkflowCompleted(
                run_id=self.run_id,
                timestamp=time.time(),
                status=status,
                duration_s=duration,
                error=error,
            )
        )
        return RunResult(
            run_id=self.run_id,
            status=status,
            outputs=self._outputs,
            dead_letters=self._dead_letters,
            dead_letters_not_kept=sum(
                n.rt.dead_letters_not_kept for n in self._nodes.values()
            ),
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

    # --- wiring ------------------------------------------------------------------

    def _build(self) -> None:
        self._nodes = {}
        self._schedule_run = None
        schedule = self.plan.schedule
        if schedule is not None and self._store is None and self.mode == "dag":
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
        )
        if self._store is not None and self.mode == "stream":
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
            for p in unconnected:
                n.collect.setdefault(p, [])

    # --- running -----------------------------------------------------------------

    async def _run_tasks(self) -> None:
        if self._schedule_run is not None:
            try:
                await self._schedule_run.run()
            except BaseExceptionGroup as group:
                raise _first_failure(group) from None
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
        if self._store is not None and self.mode == "stream" and segments:
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
                        self._run_segment(seg), name=f"segment:{seg.head.id}"
                    )
                if any(n.direct for n in self._nodes.values()):
                    tg.create_task(run_direct(self), name="direct-calls")
        except BaseExceptionGroup as group:
            raise _first_failure(group) from None
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
            n.collect[port].extend(batch)

    async def _flush_side(self, n: NodeRun) -> None:
        if n.rt.pending:
            pending, n.rt.pending = n.rt.pending, {}
            for port, items in pending.items():
                await self._deliver(n, port, items)

    async def _run_segment(self, seg: Segment) -> None:
        for n in seg.nodes:
            self._node_started(n)
        head = seg.head
        kernels: list[tuple[NodeRun, Callable[[list[Any]], list[Any]]]] = []
        head_kernel = None
        if not seg.is_source and len(head.gnode.inputs) == 1:
            head_kernel = self._kernel(head)
        stream: AsyncIterator[list[Any]]
        if head_kernel is not None:
            # A kernel node that heads its segment (unfused, a fan-out branch,
            # after a fan-in) still runs per batch, straight off its channel.
            hook = epochs.barrier_hook(self, seg) if self._coord is not None else None
            stream = self._port_batches(head, head.gnode.inputs[0], hook)
            kernels.append((head, head_kernel))
        elif seg.is_source:
            stream = stages.count_out(self, head, self._source_batches(seg))
        else:
            stream = stages.count_out(self, head, self._head_batches(head, seg))
        counted = head_kernel is not None  # _port_batches counted the head's input
        composed: list[NodeRun] = []
        for n in seg.chain:
            kernel = self._kernel(n)
            if kernel is None and stages.composable(self, n):
                if kernels:
                    stream = stages.kernel_stage(self, stream, kernels, counted)
                    kernels, counted = [], False
                composed.append(n)  # user generators compose item by item
                continue
            if composed:
                stream = stages.composed_stage(self, composed, stream)
                composed = []
            if kernel is not None:
                kernels.append((n, kernel))
                continue
            if kernels:
                stream = stages.kernel_stage(self, stream, kernels, counted)
                kernels, counted = [], False
            stream = stages.count_out(self, n, stages.generator_stage(self, n, stream))
        if composed:
            stream = stages.composed_stage(self, composed, stream)
        if kernels:
            stream = stages.kernel_stage(self, stream, kernels, counted)
        tail = seg.tail
        nodes = seg.nodes
        probe = self.options.batch_probe
        ids = tuple(n.id for n in nodes)
        every = countdown = max(1, self.options.probe_every)
        head_rt = head.rt
        budget = self._budget
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for batch in stream:
                seg.delivering = True
                await self._deliver(tail, OUT_PORT, batch, counted=True)
                for n in nodes:
                    if n.rt.pending:
                        await self._flush_side(n)
                seg.delivering = False
                if budget is not None:
                    budget.check()
                if probe is not None:
                    countdown -= 1
                    if not countdown:
                        countdown = every
                        probe(ids, len(batch), head_rt.taken_at, perf_counter())
        self._segments_left -= 1
        if not self._segments_left:
            self._segments_done.set()
        for n in nodes:
            await self._flush_side(n)
            for sends in n.sends.values():
                for s in sends:
                    s.close()
            self._node_completed(n)

    def _kernel(self, n: NodeRun) -> Callable[[list[Any]], list[Any]] | None:
        factory = n.spec.kernel
        if factory is None or n.spec.wants_ctx:
            return None
        try:
            return factory(n.gnode.config)
        except Exception as exc:  # a kernel that cannot be built (a wasm module)
            text = f"node {n.id!r} ({n.spec.type_id}) failed to start: {exc}"
            raise Abort(text, n.id) from exc

    # --- heads ---------------------------------------------------------------------

    async def _source_batches(self, seg: Segment) -> AsyncIterator[list[Any]]:
        """A source's batches, until it ends or a stop ends it between batches."""
        batches = self._head_batches(seg.head, seg)
        stops_itself = seg.head.spec.stops_itself
        loop = asyncio.get_running_loop()
        rested = loop.time()
        async with contextlib.aclosing(batches):  # type: ignore[type-var]
            while stops_itself or not self._stopping:
                if loop.time() - rested > YIELD_EVERY:
                    # A source that never waits (a range, a file read whole)
                    # would starve the loop: stops, signals, checkpoints and
                    # servers get a turn at least every YIELD_EVERY seconds.
                    await asyncio.sleep(0)
                    rested = loop.time()
                if seg.due is not None or seg.gate is not None:
                    await self._source_gate(seg)
                try:
                    async with asyncio.timeout(None) as seg.pulling:
                        batch = await anext(batches)
                except StopAsyncIteration:
                    if seg.due is not None:  # mark the epoch before the end
                        await epochs.segment_barrier(self, seg, seg.due)
                    if self._coord is not None:
                        # No new epochs once a source ended; the final
                        # checkpoint after the drain covers the rest.
                        self._coord.active = False
                    return
                except TimeoutError:
                    if self._stopping:
                        return  # end-of-stream now lets everything downstream drain
                    raise
                finally:
                    seg.pulling = None
                seg.head.rt.taken_at = perf_counter()
                if seg.gate is not None:
                    # Marked while it was pulled: this batch came after the
                    # snapshot, so it waits for the commit. (A barrier that
                    # is only due goes after this batch, at the loop's top:
                    # the source's state already counts the batch.)
                    await self._source_gate(seg)
                yield batch

    async def _source_gate(self, seg: Segment) -> None:
        """Between batches: mark a due epoch, and hold on while it commits."""
        if seg.due is not None:
            epoch, seg.due = seg.due, None
            seg.gate = epoch
            await epochs.segment_barrier(self, seg, epoch)
        coord = self._coord
        while seg.gate is not None and coord is not None and coord.active:
            await coord.released.wait()
            if coord.committed >= seg.gate:
                seg.gate = None

    async def _head_batches(self, n: NodeRun, seg: Segment) -> AsyncIterator[list[Any]]:
        spec = n.spec
        if not n.gnode.inputs:
            if spec.shape == "call":
                yield [await self._failures.call(n, ())]
                return
            gen = n.call_target()()
            items = gen if spec.batched else rebatch(gen, stages.MAX_BATCH, n.rt)
            async with contextlib.aclosing(items):
                try:
                    async for batch in items:
                        yield batch
                except Abort:
                    raise
                except Exception as exc:
                    # The source's own code failed (not on a record): name it
                    # here, or the node it is fused with would be blamed.
                    self._failures.source_failed(n, exc)
            return
        on_control = epochs.barrier_hook(self, seg) if self._coord is not None else None
        if spec.shape == "call" and len(n.gnode.inputs) == 1:
            # One input: calls a batch at a time (or N at once), no feeds.
            (port,) = n.gnode.inputs
            calls = (
                stages.concurrent_call_stage(self, n, n.inputs[port], on_control)
                if n.gnode.decl.concurrency > 1
                else stages.batched_call_stage(
                    self, n, self._port_batches(n, port, on_control)
                )
            )
            async with contextlib.aclosing(calls):  # type: ignore[type-var]
                async for batch in calls:
                    yield batch
            return
        feeds: list[Any]
        zipped = spec.shape == "call" and len(n.gnode.inputs) > 1
        if on_control is not None and (spec.aligned or zipped):
            # Barriers are aligned where the node merges its inputs.
            producers = Counter(c.to_port for c in n.gnode.inbound)

            async def aligned(epoch: int) -> None:
                await epochs.segment_barrier(self, seg, epoch)

            feeds = [
                AligningFeed(
                    self._port_batches(n, p, controls=True),
                    producers[p],
                    on_control,
                    aligned,
                )
                for p in n.gnode.inputs
            ]
        else:
            feeds = [
                BatchFeed(self._port_batches(n, p, on_control))
                if spec.batched
                else ChannelFeed(n.inputs[p], n.rt, on_control)
                for p in n.gnode.inputs
            ]
        if zipped and on_control is not None:
            stage = stages.zipped_call_stage
        elif spec.shape == "call":
            stage = stages.call_stage
        else:
            stage = stages.run_generator
        async for batch in stage(self, n, feeds):
            yield batch

    async def _port_batches(
        self,
        n: NodeRun,
        port: str,
        on_control: Callable[[Control], Awaitable[None]] | None = None,
        *,
        controls: bool = False,
    ) -> AsyncIterator[Any]:
        """The port's batches; its control messages too, with ``controls``."""
        recv = n.inputs[port]
        rt = n.rt
        with recv:  # a consumer that stops early releases its producers
            async for msg in recv:
                if type(msg) is list:
                    rt.items_in += len(msg)
                    rt.taken_at = perf_counter()
                    yield msg
                elif isinstance(msg, Control):
                    if controls:
                        yield msg
                    elif on_control is not None:
                        await on_control(msg)
                else:
                    msg_type = type(msg).__name__
                    text = f"unexpected {msg_type} on a channel"
                    raise TypeError(text)

    # --- events --------------------------------------------------------------------

    def _node_started(self, n: NodeRun) -> None:
        n.rt.started = time.perf_counter()
        if self.bus.active:
            self._publish_started(n)

    def _publish_started(self, n: NodeRun) -> None:
        self.bus.publish(
            NodeStarted(
                run_id=self.run_id,
                timestamp=time.time(),
                node_id=n.id,
                node_type=n.spec.type_id,
            )
        )

    def _node_completed(self, n: NodeRun) -> None:
        n.rt.ended = time.perf_counter()
        if self.bus.active:
            self._publish_completed(n)

    def _publish_completed(self, n: NodeRun) -> None:
        self.bus.publish(
            NodeCompleted(
                run_id=self.run_id,
                timestamp=time.time(),
                node_id=n.id,
                node_type=n.spec.type_id,
                stats=n.rt.stats(),
            )
        )


def _first_failure(group: BaseExceptionGroup[Any]) -> BaseException:
    """The exception to report for a failed task group: a node's own, if any.

    Other tasks fail in reaction to the first failure (cancelled, or a channel
    broken by it), so the node failure is the cause worth naming.
    """
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for kind in (Abort, Exception):
        for exc in leaves:
            if isinstance(exc, kind):
                return exc
    return leaves[0]


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
