"""flowstream's connectors: sources and sinks to the outside world.

A node pack like any third-party one: it imports only flowstream's public API
and registers through the ``flowstream.nodes`` entry point (``NODES``), so it
could move to its own distribution unchanged.

=================  ==============================================
``file.*``         JSON Lines and CSV files (tail with ``follow``)
``http.*``         poll a URL / POST batches
``sqlite.*``       query a table / batched, keyed upserts
``stdio.*``        JSON Lines on stdin and stdout
``ws.*``           WebSocket servers and clients (JSON, MessagePack, raw)
=================  ==============================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .files import file_sink, file_source
from .http import http_sink, http_source
from .sqlite import sqlite_sink, sqlite_source
from .stdio import stdio_sink, stdio_source
from .websocket import ws_sink, ws_source

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = ["NODES"]

NODES: tuple[NodeSpec, ...] = (
    file_source,
    file_sink,
    http_source,
    http_sink,
    sqlite_source,
    sqlite_sink,
    stdio_source,
    stdio_sink,
    ws_source,
    ws_sink,
)
