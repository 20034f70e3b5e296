"""Redis Streams connectors: ``redis.source`` reads a stream, ``redis.sink`` writes.

Both use redis-py's asyncio client (the ``redis`` extra), imported when a
node starts: without it this family's nodes still validate, and fail at
start with a message naming the extra to install.

* `connectors.redis.source`: ``redis.source``, XREAD or XREADGROUP from the
  checkpointed entry id, XACK after each committed epoch;
* `connectors.redis.sink`: ``redis.sink``, XADD (rolled back to the last
  checkpoint's id on restart) or keyed HSET/SET.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .sink import RedisSink, RedisSinkConfig, redis_sink
from .source import RedisSource, RedisSourceConfig, redis_source

if TYPE_CHECKING:
    from flowstream import NodeSpec

__all__ = [
    "NODES",
    "RedisSink",
    "RedisSinkConfig",
    "RedisSource",
    "RedisSourceConfig",
    "redis_sink",
    "redis_source",
]

NODES: tuple[NodeSpec, ...] = (redis_source, redis_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
