"""The standard library of node types.

Every built-in type is listed here explicitly (no registration by import side
effect); `flowstream.runtime.registry.NodeRegistry.default` registers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sink import collect_sink, null_sink
from .source import range_source, timer_source, values_source
from .transform import filter_items, map_items

if TYPE_CHECKING:
    from ..core.node import NodeSpec

__all__ = ["BUILTIN_NODES"]

BUILTIN_NODES: tuple[NodeSpec, ...] = (
    values_source,
    range_source,
    timer_source,
    map_items,
    filter_items,
    collect_sink,
    null_sink,
)
