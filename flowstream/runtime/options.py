"""`RunOptions`: how to run a graph, whichever executor runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from .channel import DEFAULT_CAPACITY

__all__ = ["RunOptions", "RunSettings", "Sleep"]

Sleep = Callable[[float], Any]
"""The coroutine function that waits between retry attempts."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a graph.

    Attributes:
        mode: ``"dag"`` or ``"stream"``; None takes the workflow's.
        fuse: Fuse chains of 1-in nodes into one task (per node: ``fuse``).
        max_parallel: How many suspended one-shot calls may run at once.
        capacity: Default channel capacity in batches.
        drain_timeout: Seconds a stream-mode stop may take before it aborts.
        sleep: The coroutine function used for retry delays (tests pass a
            fake clock's).
        checkpoint: A SQLite checkpoint store; a killed DAG run restarted
            with the same store and workflow resumes without redoing the
            one-shot nodes it had completed (`runtime.checkpointing`).
        checkpoint_interval_ms: How often completions are committed.
        fresh: Start over: forget what the checkpoint store holds of this
            workflow's run (completed or not) instead of resuming it, or
            instead of doing nothing when it completed. The sinks' previous
            output stays where it is (docs/reliability.md).
        max_dead_letters: How many dead letters a result keeps (the rest are
            counted, logged once and published as ``dead_letter`` events), so
            a long stream run with an unconnected ``error`` port stays bounded.
        batch_probe: Called as ``probe(node_ids, items, taken, delivered)``
            for one batch in every ``probe_every`` of each task: the nodes the
            task runs (a fused chain, head first), the items it handed
            downstream, and `time.perf_counter` readings of when the head
            took its latest input batch and when the output was delivered.
            A ``timed`` head (``time.delay``, which holds items while it takes
            more) is measured from the take of the batch its output's first
            item came in (stamps are kept per batch, never per item; a timed
            head that emits fewer items than it takes, a window, falls back
            to its latest take once 64 batches are unmatched).
            Metrics and tracing use it; None costs nothing.
        probe_every: The sampling period of ``batch_probe``, in batches.
        output_probe: Called as ``probe(node_id, port, batch)`` with each
            batch that a workflow output collects (the ports a result's
            ``outputs`` hold: ``sink.collect``'s in stream mode), on the
            event loop, as it is collected; ``node_id`` is the declared
            node's. The server keeps a stream run's recent outputs with it.
            It must be quick and must not keep the list (it is the run's);
            None costs nothing. The local executor calls it.
        backend: Which executor runs the plan: ``"local"`` (this process,
            one event loop) or ``"ray"`` (Ray actors, one per slot of the
            parallel graph; docs/scale-out.md); see
            `flowstream.runtime.backends`.
        ray_address: The Ray cluster to run on (``backend="ray"``); None
            starts a local Ray with this machine's cores, unless this process
            already joined one.
        health_timeout_s: ``backend="ray"``: an actor that has not answered
            the driver's health check (a ping, twice a second) for this long
            is taken for dead: the run fails naming its nodes, or rolls back
            under checkpoints. A node that blocks its process's event loop
            delays the pings as long: keep it above such a node's longest
            call.
        credit_window: ``backend="ray"``: how many batches one edge between
            processes may have sent and not yet acknowledged.
        reuse_actors: ``backend="ray"``: a run takes the idle actors an
            earlier completed run in this process left (their worker
            processes, with what that run imported) and leaves its own for
            the next (`flowstream.runtime.ray.pool`); False: its actors are
            new and end with it, as for runs of code that must not meet.
    """

    mode: str | None = None
    fuse: bool = True
    max_parallel: int = 64
    capacity: int = DEFAULT_CAPACITY
    drain_timeout: float = 10.0
    sleep: Sleep = asyncio.sleep
    checkpoint: str | None = None
    checkpoint_interval_ms: float = 1000.0
    fresh: bool = False
    max_dead_letters: int = 10_000
    batch_probe: Callable[[tuple[str, ...], int, float, float], None] | None = None
    probe_every: int = 16
    output_probe: Callable[[str, str, list[Any]], None] | None = None
    backend: str = "local"
    ray_address: str | None = None
    credit_window: int = 8
    health_timeout_s: float = 15.0
    reuse_actors: bool = True


class RunSettings(TypedDict, total=False):
    """`RunOptions` as keyword arguments (``runtime.run(wf, mode="stream")``).

    The same fields, each optional; a test keeps the two in step.
    """

    mode: str | None
    fuse: bool
    max_parallel: int
    capacity: int
    drain_timeout: float
    sleep: Sleep
    checkpoint: str | None
    checkpoint_interval_ms: float
    fresh: bool
    max_dead_letters: int
    batch_probe: Callable[[tuple[str, ...], int, float, float], None] | None
    probe_every: int
    output_probe: Callable[[str, str, list[Any]], None] | None
    backend: str
    ray_address: str | None
    credit_window: int
    health_timeout_s: float
    reuse_actors: bool
