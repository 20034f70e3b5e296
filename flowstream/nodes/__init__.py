"""The standard library of node types.

Every built-in type is listed here explicitly (no registration by import side
effect); `flowstream.default_registry` (`flowstream.engine`) registers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .control import merge, route, split, zip_items
from .debug import log
from .http import http_request
from .join import lookup_join, window_join
from .join_changelog import changelog_join
from .join_interval import interval_join
from .sink import collect_sink, null_sink
from .source import range_source, timer_source, values_source
from .time import delay
from .transform import (
    aggregate,
    batch,
    dedupe,
    filter_items,
    flat_map,
    json_parse,
    json_stringify,
    key_by,
    map_async,
    map_items,
    reduce,
    scan,
    select,
    throttle,
)
from .window import session_window, sliding_window, tumbling_window

if TYPE_CHECKING:
    from ..core.node import NodeSpec

__all__ = ["BUILTIN_NODES"]

BUILTIN_NODES: tuple[NodeSpec, ...] = (
    values_source,
    range_source,
    timer_source,
    map_items,
    map_async,
    filter_items,
    flat_map,
    select,
    key_by,
    scan,
    reduce,
    aggregate,
    batch,
    dedupe,
    throttle,
    json_parse,
    json_stringify,
    delay,
    log,
    tumbling_window,
    sliding_window,
    session_window,
    window_join,
    interval_join,
    changelog_join,
    lookup_join,
    merge,
    zip_items,
    route,
    split,
    http_request,
    collect_sink,
    null_sink,
)
