"""Running a routed flow: the step loop, `StepContext` and `FlowResult`.

A run starts at the entry step. Each step's ``execute(ctx)`` returns an
`Action`; conditions are evaluated on the store, and the flow moves to the
chosen step, which must be one of the current step's routes. A step that
raises is retried per its `RetryPolicy`; when it still fails, its
``on_error`` route is taken (the next step gets ``ctx.params`` with
``error``, ``error_type`` and ``node``), or the run fails. The run ends when
a step completes it, or fails when it takes more than ``max_steps`` steps.

Events, on the flow's `EventBus`, with the run's id: ``WorkflowStarted``
(mode ``routed``), then per step ``NodeStarted`` (per attempt), ``NodeFailed``
or ``NodeCompleted``, and ``RouteTaken``; ``WorkflowCompleted`` last.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal, final

import msgspec

from ..core.events import (
    NodeCompleted,
    NodeEvent,
    NodeFailed,
    NodeStarted,
    NodeStats,
    RouteTaken,
    WorkflowCompleted,
    WorkflowStarted,
)
from .action import Action
from .storage import MemoryStorage
from .store import SharedStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..runtime.events import EventBus
    from .flow import Flow, FlowNode
    from .storage import Storage

__all__ = ["FlowResult", "FlowStatus", "StepContext", "run_flow"]

FlowStatus = Literal["completed", "failed"]


class FlowResult(msgspec.Struct, kw_only=True):
    """The outcome of one run of a routed flow.

    Attributes:
        run_id: The run's id (also on every event).
        status: ``completed`` or ``failed``.
        result: What the completing action carried (None if none).
        path: The steps taken, in order (a step that failed included).
        error: Why the run failed, naming the step; None if it completed.
        failed_node: The step the run failed at, if one is to blame.
        namespace: The store namespace the run used.
        duration_s: Wall time of the run.
    """

    run_id: str
    status: FlowStatus
    result: Any = None
    path: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    failed_node: str | None = None
    namespace: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """The run completed."""
        return self.status == "completed"

    @property
    def steps(self) -> int:
        """How many steps the run took."""
        return len(self.path)


@final
class StepContext:
    """What a running step sees: its parameters, the shared store, the run.

    Attributes:
        run_id: The run's id.
        flow: The flow's name.
        node_id: This step's id in the flow.
        node_type: Its type (a registered ``step.*`` id or the class name).
        attempt: 1 for the first attempt, counting up on each retry.
        params: What the previous step passed (a parameterized action), or
            after a failure routed by ``on_error``: ``error``, ``error_type``
            and ``node``; empty otherwise.
        store: The run's `SharedStore`.
        path: The steps taken so far, this one last.
        bus: The flow's event bus.
    """

    __slots__ = (
        "attempt",
        "bus",
        "flow",
        "node_id",
        "node_type",
        "params",
        "path",
        "run_id",
        "store",
    )

    def __init__(
        self,
        *,
        run_id: str,
        flow: str,
        node_id: str,
        node_type: str,
        attempt: int,
        params: Mapping[str, Any],
        store: SharedStore,
        path: tuple[str, ...],
        bus: EventBus,
    ) -> None:
        self.run_id = run_id
        self.flow = flow
        self.node_id = node_id
        self.node_type = node_type
        self.attempt = attempt
        self.params = params
        self.store = store
        self.path = path
        self.bus = bus

    @property
    def logger(self) -> logging.Logger:
        """The step's logger, ``flowstream.step.<id>``."""
        return logging.getLogger(f"flowstream.step.{self.node_id}")

    def event(self, name: str, data: Any = None) -> None:
        """Publish a custom `NodeEvent` on the flow's bus."""
        self.bus.emit(
            NodeEvent,
            self.run_id,
            node_id=self.node_id,
            name=name,
            data=data,
        )

    def __repr__(self) -> str:
        return f"<StepContext {self.flow}:{self.node_id} run={self.run_id}>"


class _Failed(Exception):
    """Ends a run as failed; ``node`` is the step to blame, if any."""

    def __init__(self, message: str, node: str | None) -> None:
        super().__init__(message)
        self.node = node


async def run_flow(
    flow: Flow,
    *,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    store: SharedStore | None = None,
    storage: Storage | None = None,
    namespace: str | None = None,
    max_steps: int | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> FlowResult:
    """Run ``flow`` once; see `Flow.arun` for the arguments."""
    if store is not None and (storage is not None or namespace is not None):
        msg = "pass either store, or storage and/or namespace, not both"
        raise ValueError(msg)
    limit = flow.max_steps if max_steps is None else max_steps
    if limit < 1:
        msg = f"max_steps must be >= 1, got {limit}"
        raise ValueError(msg)
    run_id = uuid.uuid4().hex[:12]
    if store is None:
        store = SharedStore(
            storage if storage is not None else MemoryStorage(), namespace or run_id
        )
    runner = _Run(flow, run_id, store, flow.bus, sleep)
    return await runner.run(dict(params or {}), inputs, limit)


class _Run:
    """One run's state; `run` drives it."""

    def __init__(
        self,
        flow: Flow,
        run_id: str,
        store: SharedStore,
        bus: EventBus,
        sleep: Callable[[float], Awaitable[Any]],
    ) -> None:
        self.flow = flow
        self.run_id = run_id
        self.store = store
        self.bus = bus
        self.sleep = sleep
        self.path: list[str] = []

    async def run(
        self, params: dict[str, Any], inputs: Mapping[str, Any] | None, limit: int
    ) -> FlowResult:
        started = time.perf_counter()
        flow, bus = self.flow, self.bus
        bus.emit(
            WorkflowStarted,
            self.run_id,
            workflow=flow.name,
            mode="routed",
            nodes=len(flow.nodes),
        )
        result = FlowResult(
            run_id=self.run_id, status="completed", namespace=self.store.namespace
        )
        finished = False
        try:
            if inputs:
                await self.store.update(inputs)
            result.result = await self._loop(flow.entry, params, limit)
            finished = True
        except _Failed as exc:
            result.status, result.error, result.failed_node = (
                "failed",
                str(exc),
                exc.node,
            )
            finished = True
        except Exception as exc:  # the store's backend, most likely
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
            finished = True
        finally:
            result.path = self.path
            result.duration_s = time.perf_counter() - started
            # Cancelled: the event says so, and the cancellation goes on.
            bus.emit(
                WorkflowCompleted,
                self.run_id,
                status=result.status if finished else "cancelled",
                duration_s=result.duration_s,
                error=result.error if finished else "the run was cancelled",
            )
        return result

    async def _loop(self, current: str, params: dict[str, Any], limit: int) -> Any:
        while True:
            if len(self.path) >= limit:
                raise _Failed(_loop_message(self.path, current, limit), current)
            self.path.append(current)
            node = self.flow.nodes[current]
            try:
                action, resolved = await self._attempts(node, params)
            except _StepError as failure:
                exc = failure.exc
                if node.on_error is None:
                    text = f"step {node.id!r} ({node.type}) failed: {_describe(exc)}"
                    raise _Failed(text, node.id) from exc
                params = {
                    "error": str(exc),
                    "error_type": type(exc).__name__,
                    "node": node.id,
                }
                current = self._route(node, node.on_error, "error")
                continue
            if resolved is None:
                # No action: the only route, or the end of the flow.
                if not node.routes:
                    return None
                if len(node.routes) > 1:
                    choices = ", ".join(node.routes)
                    text = (
                        f"step {node.id!r} returned no action but has "
                        f"{len(node.routes)} routes ({choices}); return an Action "
                        "to choose one"
                    )
                    raise _Failed(text, node.id)
                params = {}
                current = self._route(node, node.routes[0], "default")
                continue
            if resolved.kind == "complete":
                return resolved.result
            target = resolved.target
            assert target is not None
            if target not in node.routes:
                choices = ", ".join(node.routes) or "none"
                text = (
                    f"step {node.id!r} chose {target!r}, but the flow has no route "
                    f"{node.id} -> {target} (routes from {node.id!r}: {choices})"
                )
                raise _Failed(text, node.id)
            params = dict(resolved.params)
            assert action is not None
            current = self._route(node, target, action.kind)

    def _route(self, node: FlowNode, target: str, kind: str) -> str:
        if self.bus.active:
            self.bus.emit(
                RouteTaken,
                self.run_id,
                from_node=node.id,
                to_node=target,
                action=kind,
                step=len(self.path),
            )
        return target

    async def _attempts(
        self, node: FlowNode, params: dict[str, Any]
    ) -> tuple[Action | None, Action | None]:
        """Run a step under its retry policy: (its action, resolved) or raise."""
        bus = self.bus
        attempt = 1
        while True:
            ctx = StepContext(
                run_id=self.run_id,
                flow=self.flow.name,
                node_id=node.id,
                node_type=node.type,
                attempt=attempt,
                params=params,
                store=self.store,
                path=tuple(self.path),
                bus=bus,
            )
            if bus.active:
                bus.emit(
                    NodeStarted,
                    self.run_id,
                    node_id=node.id,
                    node_type=node.type,
                    attempt=attempt,
                )
            began = time.perf_counter()
            try:
                action = await node.step.execute(ctx)
                if action is not None and not isinstance(action, Action):
                    msg = (
                        f"execute returned {type(action).__name__}; "
                        "return an Action or None"
                    )
                    raise TypeError(msg)
                # Conditions are part of the step: a failing one is retried too.
                resolved = (
                    None if action is None else await action.resolve(self.store, params)
                )
            except Exception as exc:
                retry = node.retry is not None and attempt < node.retry.max_attempts
                bus.emit(
                    NodeFailed,
                    self.run_id,
                    node_id=node.id,
                    node_type=node.type,
                    error=str(exc),
                    error_type=type(exc).__name__,
                    attempt=attempt,
                    will_retry=retry,
                )
                if not retry:
                    raise _StepError(exc) from exc
                assert node.retry is not None
                await self.sleep(node.retry.delay_s(attempt))
                attempt += 1
                continue
            if bus.active:
                bus.emit(
                    NodeCompleted,
                    self.run_id,
                    node_id=node.id,
                    node_type=node.type,
                    stats=NodeStats(
                        items_in=1,
                        items_out=1,
                        errors=attempt - 1,
                        duration_s=time.perf_counter() - began,
                    ),
                )
            return action, resolved


class _StepError(Exception):
    """A step failed for good (its retries used up); carries its exception."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _loop_message(path: list[str], current: str, limit: int) -> str:
    """Name the loop a run was caught in when it hit ``max_steps``."""
    if current in path:
        start = len(path) - 1 - path[::-1].index(current)
        loop = [*path[start:], current]
        return (
            f"max_steps ({limit}) reached: the flow kept looping through "
            f"{' -> '.join(loop)}"
        )
    tail = " -> ".join([*path[-5:], current])
    return f"max_steps ({limit}) reached before step {current!r} (after {tail})"
