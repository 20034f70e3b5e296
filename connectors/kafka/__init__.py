"""Kafka connectors: ``kafka.source`` reads topics, ``kafka.sink`` produces to one.

Both use aiokafka (the ``kafka`` extra), imported when a node starts:
without it this family's nodes still validate, and fail at start with a
message naming the extra to install.

* `connectors.kafka.source`: ``kafka.source``, offsets per partition in the
  checkpoint, a seek there on restore and on assignment, group commits
  after each committed epoch;
* `connectors.kafka.sink`: ``kafka.sink``, key and headers from record
  fields, the idempotent producer, at least once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sink import KafkaSink, KafkaSinkConfig, kafka_sink
from .source import KafkaSource, KafkaSourceConfig, kafka_source

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "KafkaSink",
    "KafkaSinkConfig",
    "KafkaSource",
    "KafkaSourceConfig",
    "kafka_sink",
    "kafka_source",
]

NODES: tuple[NodeSpec, ...] = (kafka_source, kafka_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
