"""flowstream's connectors: sources and sinks to the outside world.

Node packs like any third-party one: they import only flowstream's public API
and each family registers through its own ``flowstream.nodes`` entry point
(its ``NODES``), so a family whose optional client library is missing disables
only itself, and any family could move to its own distribution unchanged.
Importing this package imports no family. `connectors.base` holds the public
`LogSource`/`LogSink` bases the broker families are built on.

=====================  ==============================================
``connectors.files``   ``file.*``: JSON Lines and CSV files (tail with ``follow``)
``connectors.http``    ``http.*``: poll a URL / POST batches
``connectors.kafka``   ``kafka.*``: Kafka topics (extra ``kafka``)
``connectors.nats``    ``nats.*``: NATS JetStream (extra ``nats``)
``connectors.redis``   ``redis.*``: Redis Streams (extra ``redis``)
``connectors.sqlite``  ``sqlite.*``: query a table / batched, keyed upserts
``connectors.stdio``   ``stdio.*``: JSON Lines on stdin and stdout
``connectors.websocket``  ``ws.*``: WebSocket servers and clients
=====================  ==============================================
"""

from __future__ import annotations

__all__: list[str] = []
