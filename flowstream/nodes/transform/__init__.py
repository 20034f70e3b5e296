"""Transforms: per-item functions, records, keyed aggregates, batching, rates.

Modules: ``items`` (per item: map, filter, flat_map, select, key_by, JSON,
map_async), ``aggregate`` (scan, reduce, aggregate), ``timing`` (batch, dedupe,
throttle). The stateless 1-in/1-out nodes carry a batch kernel too: in a
fused chain the runtime applies the kernels to whole batches in one task.

The stateful ones (scan, reduce, batch, dedupe) keep what they remember in the
node state (``ctx.state``), in plain msgspec-encodable values. A node whose
code fails on an item is restarted on the rest of its input, and the state is
what carries over; every stateful node here changes its state only after an
item has been fully processed, so a failed item leaves no trace.
"""

from __future__ import annotations

from .aggregate import (
    OPS as OPS,
    Aggregate as Aggregate,
    aggregate as aggregate,
    reduce as reduce,
    scan as scan,
)
from .items import (
    JsonStringify as JsonStringify,
    KeyBy as KeyBy,
    MapAsync as MapAsync,
    MapAsyncConfig as MapAsyncConfig,
    Select as Select,
    filter_items as filter_items,
    flat_map as flat_map,
    json_parse as json_parse,
    json_stringify as json_stringify,
    key_by as key_by,
    map_async as map_async,
    map_items as map_items,
    select as select,
)
from .timing import (
    Batch as Batch,
    Dedupe as Dedupe,
    Throttle as Throttle,
    batch as batch,
    dedupe as dedupe,
    throttle as throttle,
)

__all__ = [
    "OPS",
    "aggregate",
    "batch",
    "dedupe",
    "filter_items",
    "flat_map",
    "map_async",
    "json_parse",
    "json_stringify",
    "key_by",
    "map_items",
    "reduce",
    "scan",
    "select",
    "throttle",
]
