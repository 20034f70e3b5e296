"""Failure handling: a node's `RetryPolicy`, then its `ErrorHandling`.

A failing call (a kernel on one item, a one-shot call, a generator that
raised on an item) is retried after the policy's delay, up to
``max_attempts``; then ``continue_on_error`` sends the item to the node's
``error`` port (or the run's dead letters) and the run goes on, while
``stop_workflow`` fails the run with a `NodeError` naming the node.
``retry_workflow`` is handled by the executor around whole runs.

A one-shot node's ``timeout_ms`` bounds each call: a coroutine is cancelled
at the limit, a plain function (which nothing in-process can interrupt) has
its late result discarded; either way the item fails with
`TimeLimitExceeded`, like any other failure.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, NoReturn

from ...core.events import NodeFailed
from ...core.workflow import ContinueOnError
from ...errors import NodeError, TimeLimitExceeded
from ..checkpointing import record_fingerprint

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ..events import EventBus
    from .fusion import NodeRun

__all__ = ["FAILED", "Abort", "Failures", "first_failure"]

FAILED: Any = object()
"""Returned instead of a result when the item was handed to error handling."""


class Abort(Exception):
    """A node failed under ``stop_workflow``: the run must end as failed.

    ``node_id`` and ``item`` name the node and the record it failed on, when
    there was one (for poison-record accounting across restarts).
    """

    def __init__(
        self, message: str, node_id: str | None = None, item: Any = None
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.item = item


class Failures:
    """Applies retry policies and error handling for one run.

    Args:
        bus: Where `NodeFailed` events go.
        run_id: The run's id, for the events.
        sleep: Waits between attempts (a fake clock's in tests).
    """

    def __init__(
        self, bus: EventBus, run_id: str, sleep: Callable[[float], Awaitable[Any]]
    ) -> None:
        self.bus = bus
        self.run_id = run_id
        self.sleep = sleep
        # Poison records (failed earlier runs too often): node id ->
        # fingerprint -> why; they go to the dead letters instead of failing
        # the run again.
        self.poison: dict[str, dict[str, str]] = {}

    async def attempt(
        self, n: NodeRun, call: Callable[[], Any], item: Any, *, first: int = 1
    ) -> Any:
        """Return ``call()``, retried per policy; `FAILED` if it was given up.

        ``first`` is the number of this attempt (2 when the first failed
        elsewhere and was already handled).
        """
        attempt = first
        while True:
            try:
                return call()
            except Exception as exc:
                if not await self.on_failure(n, exc, item, attempt):
                    return FAILED
                attempt += 1

    async def call(
        self, n: NodeRun, args: tuple[Any, ...], *, failed: Exception | None = None
    ) -> Any:
        """Call a one-shot node with one item per input, under its policies.

        ``failed`` is the exception a first attempt made elsewhere raised
        (the DAG loop calls plain functions itself): it is handled as
        attempt 1, and the retries, if any, start from attempt 2.
        """
        target = n.call_target()
        limit = n.gnode.decl.timeout_ms
        attempt = 1
        while True:
            try:
                if failed is not None:
                    exc, failed = failed, None
                    raise exc
                if limit is not None:
                    return await _limited(target, args, n.spec.is_async, limit)
                result = target(*args)
                if n.spec.is_async:
                    result = await result
                return result
            except Exception as exc:
                item = (
                    args[0]
                    if len(args) == 1
                    else dict(zip(n.gnode.inputs, args, strict=True))
                )
                if not await self.on_failure(n, exc, item, attempt):
                    return FAILED
                attempt += 1

    def source_failed(self, n: NodeRun, exc: Exception) -> NoReturn:
        """A source's own code raised: fail the run naming it.

        There is no record to blame (nor to count as a poison record), and
        a source cannot be replayed, so no retry either.

        Raises:
            Abort: Always.
        """
        n.rt.errors += 1
        self.bus.emit(
            NodeFailed,
            self.run_id,
            node_id=n.id,
            node_type=n.spec.type_id,
            error=str(exc),
            error_type=type(exc).__name__,
            attempt=1,
            will_retry=False,
            **n.rt.where,
        )
        error = NodeError(
            f"{type(exc).__name__}: {exc}", node_id=n.id, node_type=n.spec.type_id
        )
        raise Abort(str(error)) from exc

    async def on_failure(
        self, n: NodeRun, exc: Exception, item: Any, attempt: int
    ) -> bool:
        """Account for a failure on ``item``; return True to try it again.

        Raises:
            Abort: The node's policy is to fail the run.
        """
        n.rt.errors += 1
        retry = n.retry is not None and attempt < n.retry.max_attempts
        self.bus.emit(
            NodeFailed,
            self.run_id,
            node_id=n.id,
            node_type=n.spec.type_id,
            error=str(exc),
            error_type=type(exc).__name__,
            attempt=attempt,
            will_retry=retry,
            **n.rt.where,
        )
        if retry:
            assert n.retry is not None
            await self.sleep(n.retry.delay_s(attempt))
            return True
        if isinstance(n.handling, ContinueOnError):
            n.rt.dead_letter(item, f"{type(exc).__name__}: {exc}", type(exc).__name__)
            return False
        poison = self.poison.get(n.id)
        if poison:
            why = poison.get(record_fingerprint(item)[0])
            if why is not None:
                reason = f"poison record: {why}; now {type(exc).__name__}: {exc}"
                n.rt.dead_letter(item, reason, type(exc).__name__)
                return False
        error = NodeError(
            _reason(exc), node_id=n.id, node_type=n.spec.type_id, item=item
        )
        raise Abort(str(error), n.id, item) from exc


def first_failure(group: BaseExceptionGroup[Any]) -> BaseException:
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


def _reason(exc: Exception) -> str:
    """One line saying what went wrong: the exception's type and message."""
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = f"{exc.args[0]!r} is missing"
    return f"{type(exc).__name__}: {text}"


async def _limited(
    target: Callable[..., Any], args: tuple[Any, ...], is_async: bool, limit_ms: float
) -> Any:
    """One call under ``timeout_ms``; `TimeLimitExceeded` past it."""
    msg = f"time limit exceeded: the call ran over timeout_ms={limit_ms:g}"
    if not is_async:
        started = time.perf_counter()
        result = target(*args)
        if (time.perf_counter() - started) * 1000.0 > limit_ms:
            raise TimeLimitExceeded(msg)
        return result
    scope = asyncio.timeout(limit_ms / 1000.0)
    try:
        async with scope:
            return await target(*args)
    except TimeoutError:
        if scope.expired():
            raise TimeLimitExceeded(msg) from None
        raise  # the node's own TimeoutError, not the limit
