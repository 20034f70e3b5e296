"""A fluent, typed dataflow API beside the `Workflow` builder.

::

    from flowstream.dataflow import Dataflow, count, range_source, tumbling

    flow = Dataflow("numbers")
    numbers = flow.source(range_source(100))            # DataStream[int]
    odd = numbers.filter(lambda n: n % 2 == 1)          # DataStream[int]
    timed = odd.map(lambda n: {"n": n, "t": n / 10})    # DataStream[dict[str, float]]
    counts = timed.window(tumbling(seconds=1), count(), timestamp=lambda r: r["t"])
    out = counts.collect()
    result = flow.run()
    out.items(result)                       # [{"key": None, "start": 0.0, ...}, ...]

The dataflow is a `Workflow` underneath (``flow.workflow``): the same
validation, plan, executors and files (a workflow holding lambdas cannot be
written to a file; module-level functions can). Every registered node type
has a typed method or function here: `NODE_TYPES` says which.
"""

from __future__ import annotations

from .connectors import (
    Sink as Sink,
    Source as Source,
    collect as collect,
    file_sink as file_sink,
    file_source as file_source,
    http_sink as http_sink,
    http_source as http_source,
    kafka_sink as kafka_sink,
    kafka_source as kafka_source,
    log_sink as log_sink,
    nats_sink as nats_sink,
    nats_source as nats_source,
    null_sink as null_sink,
    range_source as range_source,
    redis_sink as redis_sink,
    redis_source as redis_source,
    sqlite_sink as sqlite_sink,
    sqlite_source as sqlite_source,
    stdio_sink as stdio_sink,
    stdio_source as stdio_source,
    timer_source as timer_source,
    values_source as values_source,
    ws_sink as ws_sink,
    ws_source as ws_source,
)
from .flow import Dataflow as Dataflow
from .stream import (
    Collected as Collected,
    DataStream as DataStream,
    DeadLetterRecord as DeadLetterRecord,
    JoinChange as JoinChange,
    Joined as Joined,
    Keyed as Keyed,
    KeyedStream as KeyedStream,
    Routes as Routes,
)
from .windows import (
    Aggregate as Aggregate,
    WindowKind as WindowKind,
    WindowResult as WindowResult,
    collect_all as collect_all,
    count as count,
    first as first,
    fold as fold,
    last as last,
    max_of as max_of,
    mean_of as mean_of,
    min_of as min_of,
    session as session,
    sliding as sliding,
    sum_of as sum_of,
    tumbling as tumbling,
)

__all__ = [
    "NODE_TYPES",
    "Aggregate",
    "Collected",
    "Dataflow",
    "DeadLetterRecord",
    "JoinChange",
    "Joined",
    "Keyed",
    "KeyedStream",
    "Routes",
    "Sink",
    "Source",
    "DataStream",
    "WindowKind",
    "WindowResult",
    "collect",
    "collect_all",
    "count",
    "file_sink",
    "file_source",
    "first",
    "fold",
    "http_sink",
    "http_source",
    "kafka_sink",
    "kafka_source",
    "last",
    "log_sink",
    "max_of",
    "mean_of",
    "min_of",
    "nats_sink",
    "nats_source",
    "null_sink",
    "range_source",
    "redis_sink",
    "redis_source",
    "session",
    "sliding",
    "sqlite_sink",
    "sqlite_source",
    "stdio_sink",
    "stdio_source",
    "sum_of",
    "timer_source",
    "tumbling",
    "values_source",
    "ws_sink",
    "ws_source",
]


def _node_types() -> dict[str, str]:
    """Each node type the API builds, and the method or function that does."""
    found: dict[str, str] = {}
    places: list[tuple[str, object]] = [
        ("Dataflow", Dataflow),
        ("DataStream", DataStream),
        ("flowstream.dataflow", None),
    ]
    for owner, cls in places:
        names = dir(cls) if cls is not None else __all__
        for name in names:
            obj = getattr(cls, name) if cls is not None else globals().get(name)
            built = getattr(obj, "__node_type__", None)
            if built is None:
                continue
            for type_id in (built,) if isinstance(built, str) else built:
                found.setdefault(type_id, f"{owner}.{name}")
    return dict(sorted(found.items()))


NODE_TYPES: dict[str, str] = _node_types()
"""Node type id -> the typed method or function that adds it."""
