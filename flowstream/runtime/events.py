"""The EventBus that broadcasts a run's events, and recording and replay.

The executor publishes every ``ExecutionEvent`` on one ``EventBus``. Readers
attach in one of two ways:

- ``bus.subscribe()`` gives a ``Subscription``, an async iterator with its own
  bounded buffer: the server's WebSocket feed, a test waiting for an event.
- ``bus.add_listener(fn)`` registers a plain function called inline by
  ``publish``: metrics, a progress display, an ``EventRecorder``.

Publishing never waits. A subscriber that falls behind loses its *oldest*
buffered events, counted in ``Subscription.dropped`` and in
``EventBus.statistics()``, so a slow reader can never slow a run down or grow
its memory: this is the only place in flowstream where items may be dropped.

Recording writes events as JSON Lines (one ``encode_event`` object a line);
``read_events``/``iter_events`` read them back and ``replay`` republishes them,
so a UI or a metrics hook can be tested against a recorded run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import IO, TYPE_CHECKING, Any, Final, final

import msgspec

from flowstream.core.events import decode_event, encode_event
from flowstream.errors import DecodeError, EncodeError, EndOfStream, WouldBlock

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType
    from typing import Self

    from flowstream.core.events import ExecutionEvent

    Listener = Callable[[ExecutionEvent], object]

__all__ = [
    "EventBus",
    "EventBusStatistics",
    "EventRecorder",
    "Subscription",
    "iter_events",
    "read_events",
    "replay",
]

logger = logging.getLogger("flowstream.events")

DEFAULT_MAX_BUFFERED: Final = 1024


def _check_max_buffered(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        msg = f"max_buffered must be an int >= 1, got {value!r}"
        raise ValueError(msg)
    return value


class EventBusStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of an ``EventBus``, from ``EventBus.statistics()``.

    Attributes:
        subscribers: Open subscriptions.
        listeners: Registered listener functions.
        published: Events handed to at least one subscriber or listener.
            Events published while nobody listened, or after ``close()``,
            are not counted: that path is kept to a single check.
        dropped: Events dropped from full subscriber buffers since the bus
            was made, summed over every subscription, closed ones included.
    """

    subscribers: int
    listeners: int
    published: int
    dropped: int


@final
class EventBus:
    """Broadcasts execution events to subscriptions and listeners.

    Every subscription receives every event published after it was made, in
    publish order, into its own buffer of ``max_buffered`` events. A full
    buffer drops its oldest event to make room, so ``publish`` never waits and
    one slow subscriber never affects another.

    The bus is not thread-safe: publish from the event loop's thread (from
    another thread, use ``loop.call_soon_threadsafe(bus.publish, event)``).

    Args:
        max_buffered: The default buffer size of each subscription, >= 1.

    Raises:
        ValueError: ``max_buffered`` is not an int >= 1.
    """

    __slots__ = (
        "_active",
        "_closed",
        "_dropped",
        "_listeners",
        "_max_buffered",
        "_published",
        "_subscriptions",
    )

    def __init__(self, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self._max_buffered = _check_max_buffered(max_buffered)
        # Tuples, replaced rather than mutated, so that publish iterates a
        # snapshot while listeners (un)subscribe from inside a call.
        self._subscriptions: tuple[Subscription, ...] = ()
        self._listeners: tuple[Listener, ...] = ()
        # Invariant: _active is True iff the bus is open and someone is
        # attached. It is what lets publish return after one attribute check.
        self._active = False
        self._closed = False
        self._published = 0
        self._dropped = 0

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    @property
    def active(self) -> bool:
        """Whether a published event would reach anyone.

        Publishers may skip building events that nobody would see.
        """
        return self._active

    def publish(self, event: ExecutionEvent) -> None:
        """Hand an event to every subscription, then call every listener.

        Never blocks and never raises because of a reader: full subscription
        buffers drop their oldest event, and a listener that raises is logged
        and removed. With nobody attached, or after ``close()``, this does
        nothing (publishing after close is allowed, so that stragglers racing
        a shutdown need no guard).

        Args:
            event: The event to broadcast.
        """
        if not self._active:
            return
        self._published += 1
        for subscription in self._subscriptions:
            subscription._push(event)
        listeners = self._listeners
        if listeners:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    self._drop_listener(listener, event)

    def emit(self, kind: type[ExecutionEvent], run_id: str, **fields: Any) -> None:
        """Publish a ``kind`` event of run ``run_id``, stamped with the time now.

        The one way the runtime publishes: it fills in ``run_id`` and
        ``timestamp`` (``time.time()``), and builds nothing when nobody is
        attached (``active`` is False).

        Args:
            kind: The event class, e.g. ``NodeStarted``.
            run_id: The run the event belongs to.
            **fields: The event's other fields.

        Raises:
            TypeError: ``fields`` names a field ``kind`` does not have.
        """
        if self._active:
            self.publish(kind(run_id=run_id, timestamp=time.time(), **fields))

    def subscribe(self, max_buffered: int | None = None) -> Subscription:
        """Return a new subscription to the events published from now on.

        Events published before this call are not delivered. On a closed bus
        the subscription is already finished: iterating it ends at once.

        Args:
            max_buffered: This subscription's buffer size; the bus's default
                if None.

        Returns:
            A subscription; close it (or use it in ``with``) when done, or it
            keeps buffering until the bus closes.

        Raises:
            ValueError: ``max_buffered`` is not an int >= 1.
        """
        size = self._max_buffered if max_buffered is None else max_buffered
        subscription = Subscription(self, _check_max_buffered(size))
        if self._closed:
            subscription._finish()
        else:
            self._subscriptions = (*self._subscriptions, subscription)
            self._active = True
        return subscription

    def add_listener(
        self, listener: Callable[[ExecutionEvent], object]
    ) -> Callable[[], None]:
        """Call ``listener(event)`` inline for every event published from now on.

        Listeners run synchronously inside ``publish``, after the subscriptions
        were fed, so they must be quick and must not block. One that raises an
        ``Exception`` is logged on the ``flowstream.events`` logger and removed;
        publishing and the other listeners carry on. On a closed bus the
        listener is never called.

        Args:
            listener: A function taking one event; its result is ignored.

        Returns:
            A function that removes the listener; calling it again does nothing.
        """
        if not self._closed:
            self._listeners = (*self._listeners, listener)
            self._active = True

        def remove() -> None:
            self._remove_listener(listener)

        return remove

    def close(self) -> None:
        """Stop the bus; idempotent, never blocks.

        Subscriptions deliver what they have buffered and then end their
        iteration; listeners are dropped; later ``publish`` calls do nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._active = False
        subscriptions, self._subscriptions = self._subscriptions, ()
        self._listeners = ()
        for subscription in subscriptions:
            subscription._finish()

    def statistics(self) -> EventBusStatistics:
        """Return a snapshot of the bus's counters."""
        return EventBusStatistics(
            subscribers=len(self._subscriptions),
            listeners=len(self._listeners),
            published=self._published,
            dropped=self._dropped,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<EventBus {state} subscribers={len(self._subscriptions)} "
            f"listeners={len(self._listeners)}>"
        )

    def _drop_listener(self, listener: Listener, event: ExecutionEvent) -> None:
        self._remove_listener(listener)
        logger.exception(
            "event listener %r raised on %s; removed it",
            listener,
            type(event).__name__,
            extra={"listener": repr(listener), "event": type(event).__name__},
        )

    def _remove_listener(self, listener: Listener) -> None:
        # Remove by identity, one registration only: the same function may be
        # added twice and each remover takes back its own.
        listeners = list(self._listeners)
        for index, candidate in enumerate(listeners):
            if candidate is listener:
                del listeners[index]
                self._listeners = tuple(listeners)
                self._update_active()
                return

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions = tuple(
            s for s in self._subscriptions if s is not subscription
        )
        self._update_active()

    def _update_active(self) -> None:
        self._active = not self._closed and bool(self._subscriptions or self._listeners)


@final
class Subscription:
    """One reader's view of an ``EventBus``; get one from ``EventBus.subscribe()``.

    Iterate it with ``async for``: each step returns the oldest buffered event,
    waiting while the buffer is empty. Iteration ends when the bus closes (after
    the buffer is drained) or when this subscription is closed (at once; what was
    buffered is discarded). Only one task may wait on a subscription at a time.

    A sync context manager: leaving ``with bus.subscribe() as sub:`` closes it.

    Attributes:
        dropped: Events this subscription lost because its buffer was full.
        max_buffered: The size of its buffer.
    """

    __slots__ = ("_buffer", "_bus", "_finished", "_waiter", "dropped", "max_buffered")

    def __init__(self, bus: EventBus, max_buffered: int) -> None:
        self._bus = bus
        self.max_buffered = max_buffered
        self.dropped = 0
        # maxlen makes append discard the oldest event itself; _push only counts.
        self._buffer: deque[ExecutionEvent] = deque(maxlen=max_buffered)
        # Set once no further event will arrive: the bus closed or we did.
        self._finished = False
        # The future of the one task waiting for an event, if any. Made only
        # when a reader finds the buffer empty, so a busy stream allocates none.
        self._waiter: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        """True once no more events will arrive (buffered ones may remain)."""
        return self._finished

    def receive_nowait(self) -> ExecutionEvent:
        """Return the oldest buffered event without waiting.

        Returns:
            The event.

        Raises:
            WouldBlock: The buffer is empty but more events may come.
            EndOfStream: The buffer is empty and the subscription is finished.
        """
        if self._buffer:
            return self._buffer.popleft()
        if self._finished:
            raise EndOfStream
        raise WouldBlock

    def close(self) -> None:
        """Stop receiving; idempotent, never blocks.

        Buffered events are discarded and a waiting iteration ends.
        """
        self._buffer.clear()
        if not self._finished:
            self._bus._unsubscribe(self)
            self._finish()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ExecutionEvent:
        while True:
            if self._buffer:
                return self._buffer.popleft()
            if self._finished:
                raise StopAsyncIteration
            if self._waiter is not None:
                msg = "another task is already waiting on this subscription"
                raise RuntimeError(msg)
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                # A second reader may have installed its own waiter meanwhile.
                if self._waiter is waiter:
                    self._waiter = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._finished else "open"
        return (
            f"<Subscription {state} buffered={len(self._buffer)}/"
            f"{self.max_buffered} dropped={self.dropped}>"
        )

    def _push(self, event: ExecutionEvent) -> None:
        buffer = self._buffer
        if len(buffer) == self.max_buffered:
            self.dropped += 1
            self._bus._dropped += 1
        buffer.append(event)
        # Checked inline: while events arrive faster than the reader takes
        # them there is no waiter, and the skipped call is ~15% of a publish.
        if self._waiter is not None:
            self._wake()

    def _finish(self) -> None:
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            # A cancelled reader's future is already done; leave it be.
            if not waiter.done():
                waiter.set_result(None)


@final
class EventRecorder:
    """Writes events to a JSON Lines file, one ``encode_event`` object a line.

    A sync context manager; ``close()`` detaches it from any bus it was
    attached to, then flushes and closes the file. ``write`` fits
    ``EventBus.add_listener`` directly, or use ``attach``::

        with EventRecorder("run.jsonl") as recorder:
            recorder.attach(bus)
            ...  # run the workflow

    An event that cannot be encoded (a ``NodeEvent`` whose ``data`` is no
    plain value) is skipped, counted in ``skipped`` and logged as a warning,
    so that one odd custom event cannot end a recording.

    Args:
        path: The file to write.
        append: Add to an existing file instead of replacing it.

    Attributes:
        path: The file being written.
        written: Events written so far.
        skipped: Events that could not be encoded.
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = path
        self.written = 0
        self.skipped = 0
        self._file: IO[bytes] = open(path, "ab" if append else "wb")
        self._detachers: list[Callable[[], None]] = []

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._file.closed

    def write(self, event: ExecutionEvent) -> None:
        """Append one event as a line of JSON.

        Args:
            event: The event to record.

        Raises:
            ValueError: The recorder is closed.
        """
        if self._file.closed:
            msg = f"event recorder for {self.path!s} is closed"
            raise ValueError(msg)
        try:
            line = encode_event(event)
        except EncodeError as exc:
            self.skipped += 1
            logger.warning(
                "%s: skipped an event that cannot be encoded: %s",
                self.path,
                exc,
                extra={"event": type(event).__name__},
            )
            return
        self._file.write(line + b"\n")
        self.written += 1

    def attach(self, bus: EventBus) -> None:
        """Record every event published on ``bus`` until this recorder closes.

        Args:
            bus: The bus to listen to.
        """
        self._detachers.append(bus.add_listener(self.write))

    def flush(self) -> None:
        """Push buffered lines to the operating system."""
        self._file.flush()

    def close(self) -> None:
        """Detach from every bus, then flush and close the file; idempotent."""
        detachers, self._detachers = self._detachers, []
        for detach in detachers:
            detach()
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def iter_events(path: str | os.PathLike[str]) -> Iterator[ExecutionEvent]:
    """Yield the events of a JSON Lines file one at a time, lazily.

    Blank lines are skipped. The file stays open until the generator is
    exhausted or closed.

    Args:
        path: A file written by ``EventRecorder`` (or anything in that format).

    Yields:
        Each event, in file order.

    Raises:
        DecodeError: A line is not a valid event; the message names the file
            and line number (``run.jsonl:7: invalid event: ...``).
        OSError: The file cannot be read.
    """
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                event = decode_event(line)
            except DecodeError as exc:
                msg = f"{path!s}:{number}: {exc}"
                raise DecodeError(msg) from exc
            yield event


def read_events(path: str | os.PathLike[str]) -> list[ExecutionEvent]:
    """Return every event of a JSON Lines file, in file order.

    Args:
        path: A file written by ``EventRecorder``.

    Returns:
        The events.

    Raises:
        DecodeError: A line is not a valid event; the message names the file
            and line number.
        OSError: The file cannot be read.
    """
    return list(iter_events(path))


def replay(events: Iterable[ExecutionEvent], bus: EventBus) -> int:
    """Publish events on a bus in order, synchronously and without pacing.

    Subscriptions receive them as they would from a live run, subject to the
    same buffer bounds: replaying more than a subscription buffers, with
    nobody reading in between, drops the oldest.

    Args:
        events: The events, such as ``read_events(path)`` or ``iter_events(path)``.
        bus: The bus to publish on.

    Returns:
        How many events were published.
    """
    count = 0
    for event in events:
        bus.publish(event)
        count += 1
    return count
