"""NATS JetStream connectors: ``nats.source`` reads a stream, ``nats.sink`` publishes.

Both use nats-py (the ``nats`` extra), imported when a node starts: without
it this family's nodes still validate, and fail at start with a message
naming the extra to install.

* `connectors.nats.source`: ``nats.source``, a durable pull consumer
  restarted at the checkpointed stream sequence, acked after each commit;
* `connectors.nats.sink`: ``nats.sink``, publishes with a ``Nats-Msg-Id``
  a replay reproduces, so the stream's dedupe window makes it exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sink import NatsSink, NatsSinkConfig, nats_sink
from .source import NatsSource, NatsSourceConfig, nats_source

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "NatsSink",
    "NatsSinkConfig",
    "NatsSource",
    "NatsSourceConfig",
    "nats_sink",
    "nats_source",
]

NODES: tuple[NodeSpec, ...] = (nats_source, nats_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
