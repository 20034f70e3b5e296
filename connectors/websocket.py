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
  senders' ``send`` block. With a ``journal`` (`connectors._journal`) frames
  pass through it first, and it holds back at most ``journal_max_frames``.
* ``ws.sink`` (client): ``send`` waits while the socket's write buffer is full,
  which holds up the sink's input channel and so the graph. Frames not yet
  confirmed by the peer (see `WebSocketSink`) are kept, up to
  ``max_unacked_bytes``.
* ``ws.sink`` (server): each subscriber has a queue of ``subscriber_queue``
  frames; a subscriber that falls behind is dropped or loses its oldest frames
  (``slow``), and never slows the others or the graph.

This module re-exports the public names; the code is split by concept:

* `connectors._ws_common`: the endpoint config both nodes extend, the
  `Reconnect` policy, and the server and client helpers they share;
* `connectors._ws_source_config`: ``ws.source``'s config and statistics, and
  its resume helpers;
* `connectors._ws_intake`: ``ws.source``'s bounded queue of frames;
* `connectors.ws_source`: the ``ws.source`` node;
* `connectors.ws_sink`: the ``ws.sink`` node, its config and statistics.
"""

from __future__ import annotations

from ._ws_common import Reconnect
from ._ws_source_config import WebSocketSourceConfig, WebSocketSourceStatistics
from .ws_sink import (
    WebSocketSink,
    WebSocketSinkConfig,
    WebSocketSinkStatistics,
    ws_sink,
)
from .ws_source import WebSocketSource, ws_source

__all__ = [
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
