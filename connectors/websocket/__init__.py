"""WebSocket connectors: ``ws.source`` takes records in, ``ws.sink`` sends them out.

Both run as a server (bound in ``initialize``, so the port is known before
``WorkflowStarted``; port 0 picks a free one, published as the node event
``listening`` and logged) or as a client of a ``url`` (reconnecting with
exponential backoff and jitter, node events ``connected``/``reconnected``).

Frames carry one record or an array of records, as JSON (text frames),
MessagePack (binary frames) or raw bytes (the frame is the record); decoding
and the optional schema are `connectors._records.RecordDecoder`'s.

Memory stays bounded end to end (never an unbounded buffer on the data path):

* ``ws.source``: each connection's reader hands its frames to a small bounded
  queue (``queue_frames``, ``queue_bytes``); the node decodes them as it
  drains them into the graph. When the pipeline is full the queue is full,
  readers wait, websockets stops reading their sockets once
  ``read_buffer_frames`` frames are buffered, and TCP flow control makes the
  senders' ``send`` block. With a ``journal`` (`connectors.websocket._journal`) frames
  pass through it first, and it holds back at most ``journal_max_frames``.
* ``ws.sink`` (client): ``send`` waits while the socket's write buffer is full,
  which holds up the sink's input channel and so the graph. Frames not yet
  confirmed by the peer (see `WebSocketSink`) are kept, up to
  ``max_unacked_bytes``.
* ``ws.sink`` (server): each subscriber has a queue of ``subscriber_queue``
  frames; a subscriber that falls behind is dropped or loses its oldest frames
  (``slow``), and never slows the others or the graph.

This module re-exports the public names; the code is split by concept:

* `connectors.websocket._common`: the endpoint config both nodes extend, the
  `Reconnect` policy, and the server and client helpers they share;
* `connectors.websocket._source_config`: ``ws.source``'s config and statistics, and
  its resume helpers;
* `connectors.websocket._intake`: ``ws.source``'s bounded queue of frames
  and the size of its batches;
* `connectors.websocket._journal`: the SQLite journal of frames;
* `connectors.websocket._source_client`: ``ws.source`` as a client (connect,
  resume after the last sequence, reconnect);
* `connectors.websocket._source_journal`: ``ws.source``'s use of its journal
  (open, replay after a restart, prune at each commit);
* `connectors.websocket._budget`: the byte budget over every connection;
* `connectors.websocket.source`: the ``ws.source`` node;
* `connectors.websocket.sink`: the ``ws.sink`` node, its config and statistics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._reconnect import Reconnect
from ._source_config import WebSocketSourceConfig, WebSocketSourceStatistics
from .sink import (
    WebSocketSink,
    WebSocketSinkConfig,
    WebSocketSinkStatistics,
    ws_sink,
)
from .source import WebSocketSource, ws_source

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "Reconnect",
    "WebSocketSink",
    "WebSocketSinkConfig",
    "WebSocketSinkStatistics",
    "WebSocketSource",
    "WebSocketSourceConfig",
    "WebSocketSourceStatistics",
    "ws_sink",
    "ws_source",
]

NODES: tuple[NodeSpec, ...] = (ws_source, ws_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
