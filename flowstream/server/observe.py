"""What the server shows of a live run: nodes as declared, series, recent outputs.

* `node_statuses` turns the executor's counters (one entry per node
  *instance*: ``count[0]``, ``count[1]`` for ``parallelism: 2``) into one
  `NodeStatus` per node *as declared*: the instances summed, with a row per
  instance; event-time nodes with their watermark and its lag.
* `NodeSeries` keeps, per node, the points the run's sampler reads (rates,
  channel fill, errors, watermark lag) over the last ``SERIES_S`` seconds, so
  a page opened (or reloaded) mid-run draws its charts from the start.
* `RecentOutputs` keeps the latest records of each workflow output of a
  running run (the ports a finished run reports: ``sink.collect``'s in
  stream mode), so a stream run's results show while it runs.

Everything here is bounded: series by points per node, outputs by records
and bytes per output port.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from ..core.events import NodeStats, summed_stats
from ..core.node import ERROR_PORT
from .schemas import InstanceStatus, NodeStatus, RecentOutput, SeriesPoint, iso

if TYPE_CHECKING:
    from ..runtime.validation import Graph
    from .schemas import NodeState

__all__ = [
    "OUTPUT_BYTES",
    "OUTPUT_RECORDS",
    "SERIES_S",
    "NodeSeries",
    "RecentOutputs",
    "declared_nodes",
    "node_statuses",
]

SERIES_S: Final = 300.0
"""How far back a node's series reaches (the UI's charts: five minutes)."""
MAX_POINTS: Final = 1200
"""At most this many points per node, whatever the sampling interval."""
OUTPUT_RECORDS: Final = 50
"""Recent records kept per output port of a running run."""
OUTPUT_BYTES: Final = 64 * 1024
"""...and at most this many bytes of them (JSON), per output port."""
RECORD_BYTES: Final = 4096
"""A record longer than this (as JSON) is kept cut, as a string, marked."""


def declared_nodes(graph: Graph) -> dict[str, tuple[str, ...]]:
    """Each node as declared -> the ids of its instances (itself if it has one).

    Partition steps the parallel expansion added are not listed: they are
    plumbing, not nodes of the workflow.
    """
    ex = graph.parallel
    if ex is None:
        return {gid: (gid,) for gid in graph.nodes}
    return {gid: ex.instances[gid] for gid in ex.declared.nodes}


def node_statuses(
    graph: Graph,
    stats: dict[str, NodeStats],
    states: dict[str, NodeState],
    fills: dict[str, float],
    now: float | None = None,
) -> dict[str, NodeStatus]:
    """One status per declared node, from per-instance counters.

    Args:
        graph: The run's graph (expanded when nodes have parallelism).
        stats: The executor's counters, by instance id.
        states: Each instance's state, from the run's events.
        fills: Each instance's fullest input channel (0 to 1).
        now: The time lags are measured at (unix seconds; default now).

    Returns:
        By declared node id: counters summed over its instances, its state
        (failed if one failed, running while one runs), its fullest
        channel, its lowest watermark; and one row per instance for a node
        with several.
    """
    now = time.time() if now is None else now
    declared = graph.parallel.declared.nodes if graph.parallel else graph.nodes
    nodes = {}
    for gid, ids in declared_nodes(graph).items():
        g = declared[gid]
        rows = [_row(i, iid, stats, states, fills, now) for i, iid in enumerate(ids)]
        total = summed_stats([stats.get(iid) or NodeStats() for iid in ids])
        fill = [r.channel_fill for r in rows if r.channel_fill is not None]
        mark = total.watermark_ms
        nodes[gid] = NodeStatus(
            type=g.spec.type_id,
            role=role(g.spec.type_id, g.inputs, g.outputs),
            state=_combined([r.state for r in rows]),
            items_in=total.items_in,
            items_out=total.items_out,
            errors=total.errors,
            dead_letters=total.dead_letters,
            rate_in=_rounded(total.rate_in),
            rate_out=_rounded(total.rate_out),
            channel_fill=max(fill) if fill else None,
            parallelism=len(ids),
            watermark=None if mark is None else iso(mark / 1000),
            watermark_ms=mark,
            watermark_lag_s=None if mark is None else _lag(now, mark),
            instances=rows if len(ids) > 1 else None,
        )
    return nodes


def _row(
    index: int,
    iid: str,
    stats: dict[str, NodeStats],
    states: dict[str, NodeState],
    fills: dict[str, float],
    now: float,
) -> InstanceStatus:
    st = stats.get(iid) or NodeStats()
    mark = st.watermark_ms
    return InstanceStatus(
        instance=index,
        node_id=iid,
        state=states.get(iid, "pending"),
        items_in=st.items_in,
        items_out=st.items_out,
        errors=st.errors,
        dead_letters=st.dead_letters,
        rate_in=_rounded(st.rate_in),
        rate_out=_rounded(st.rate_out),
        channel_fill=fills.get(iid),
        watermark_ms=mark,
        watermark_lag_s=None if mark is None else _lag(now, mark),
    )


def _lag(now: float, mark_ms: int) -> float:
    # Event time behind the clock; rounded for display (ms).
    return round(now - mark_ms / 1000, 3)


def _rounded(rate: float | None) -> float | None:
    # Rounding is for display; 3 decimals keep 0.001/s visible.
    return None if rate is None else round(rate, 3)


_ORDER: dict[str, int] = {
    "failed": 0,
    "running": 1,
    "cancelled": 2,
    "pending": 3,
    "completed": 4,
}


def _combined(states: list[NodeState]) -> NodeState:
    # One failed instance fails the node; one still running keeps it running.
    if len(set(states)) == 1:
        return states[0]
    best = min(states, key=lambda s: _ORDER[s])
    # Some completed, the others not started yet: it is under way.
    return "running" if best == "pending" else best


def role(
    type_id: str, inputs: tuple[str, ...], outputs: tuple[str, ...]
) -> Literal["source", "transform", "sink"]:
    """A node's role: ``source`` (no inputs), ``sink`` or ``transform``."""
    if not inputs:
        return "source"
    # A sink writes what it takes in; sink.collect also hands it on as the
    # run's outputs, which is still writing, not transforming.
    kind, _, verb = type_id.partition(".")
    if kind == "sink" or verb == "sink":
        return "sink"
    if not [port for port in outputs if port != ERROR_PORT]:
        return "sink"
    return "transform"


class NodeSeries:
    """Each node's recent points, one per sample (bounded; see `SERIES_S`).

    Args:
        interval: Seconds between two samples (sizes the bound).
    """

    def __init__(self, interval: float) -> None:
        self._points = max(2, min(MAX_POINTS, int(SERIES_S / interval) + 1))
        self._series: dict[str, deque[SeriesPoint]] = {}

    def add(self, nodes: dict[str, NodeStatus], now: float | None = None) -> None:
        """Append one point per node, taken at ``now`` (unix seconds)."""
        now = time.time() if now is None else now
        for gid, st in nodes.items():
            series = self._series.get(gid)
            if series is None:
                series = self._series[gid] = deque(maxlen=self._points)
            series.append(
                SeriesPoint(
                    t=round(now, 3),
                    rate_in=st.rate_in,
                    rate_out=st.rate_out,
                    channel_fill=st.channel_fill,
                    errors=st.errors + st.dead_letters,
                    watermark_lag_s=st.watermark_lag_s,
                )
            )

    def snapshot(self) -> dict[str, list[SeriesPoint]]:
        """Every node's points, oldest first."""
        return {gid: list(points) for gid, points in self._series.items()}


_json = msgspec.json.Encoder()


class _Ring:
    __slots__ = ("bytes", "records", "seen")

    def __init__(self) -> None:
        self.records: deque[tuple[int, msgspec.Raw]] = deque()
        self.bytes = 0
        self.seen = 0


class RecentOutputs:
    """The latest records of each output port of a running run.

    `take` fits `RunOptions.output_probe`: the executor calls it with each
    batch a workflow output collects. Only the batch's last `OUTPUT_RECORDS`
    are looked at, so its cost per batch is bounded however large the batch.
    Each port keeps at most `OUTPUT_RECORDS` records and `OUTPUT_BYTES` bytes
    (their JSON); a record over `RECORD_BYTES` is kept cut, as a string.
    """

    def __init__(self) -> None:
        self._rings: dict[tuple[str, str], _Ring] = {}
        self.version = 0
        """Counts every batch taken: readers tell whether anything is new."""

    def take(self, node_id: str, port: str, batch: list[Any]) -> None:
        """Keep the latest records of a batch node ``node_id`` output on ``port``."""
        ring = self._rings.get((node_id, port))
        if ring is None:
            ring = self._rings[(node_id, port)] = _Ring()
        ring.seen += len(batch)
        self.version += 1
        records = ring.records
        for item in batch[-OUTPUT_RECORDS:]:
            raw = _encode(item)
            records.append((len(raw), raw))
            ring.bytes += len(raw)
            while len(records) > OUTPUT_RECORDS or ring.bytes > OUTPUT_BYTES:
                size, _ = records.popleft()
                ring.bytes -= size

    def snapshot(self) -> dict[str, dict[str, RecentOutput]]:
        """``{node: {port: RecentOutput}}``, each port's oldest record first."""
        out: dict[str, dict[str, RecentOutput]] = {}
        for (node_id, port), ring in self._rings.items():
            out.setdefault(node_id, {})[port] = RecentOutput(
                seen=ring.seen, records=[raw for _, raw in ring.records]
            )
        return out


def _encode(item: Any) -> msgspec.Raw:
    try:
        raw = _json.encode(item)
    except (TypeError, msgspec.EncodeError):
        raw = _json.encode(repr(item))
    if len(raw) > RECORD_BYTES:
        text = raw[: RECORD_BYTES - 40].decode("utf-8", "ignore")
        raw = _json.encode(f"{text}... ({len(raw)} bytes, cut)")
    return msgspec.Raw(raw)
