"""HTTP connectors: ``http.source`` polls a URL, ``http.sink`` posts batches.

Both run on an `httpx.AsyncClient`. By default each node makes its own and
closes it at shutdown; to use another client (a proxy, auth, a test's
``httpx.MockTransport``), pass one to the node class, or register the specs
made by `http_nodes` with a client factory::

    transport = httpx.MockTransport(handler)
    registry.register_all(
        http_nodes(lambda: httpx.AsyncClient(transport=transport))
    )

Headers and timeouts from the config are sent with every request, whichever
client is used.

This module holds the node specs; the code is split by concept:

* `connectors.http._common`: the client of a node and the checks both share;
* `connectors.http.source`: the ``http.source`` node and its config;
* `connectors.http.sink`: the ``http.sink`` node and its config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowstream import NodeSpec, node

from ._common import ClientFactory
from .sink import HttpSink, HttpSinkConfig
from .source import HttpSource, HttpSourceConfig

if TYPE_CHECKING:
    import httpx

__all__ = [
    "NODES",
    "ClientFactory",
    "HttpSink",
    "HttpSinkConfig",
    "HttpSource",
    "HttpSourceConfig",
    "http_nodes",
    "http_sink",
    "http_source",
]


def _source_spec(cls: type[HttpSource]) -> NodeSpec:
    return node("http.source", config=HttpSourceConfig, batched=True)(cls)


def _sink_spec(cls: type[HttpSink]) -> NodeSpec:
    return node("http.sink", config=HttpSinkConfig, batched=True)(cls)


http_source = _source_spec(HttpSource)
http_sink = _sink_spec(HttpSink)


def http_nodes(client_factory: ClientFactory) -> tuple[NodeSpec, NodeSpec]:
    """``http.source`` and ``http.sink`` specs whose nodes use your clients.

    Each node calls ``client_factory()`` once at initialize and closes the
    client at shutdown.

    Args:
        client_factory: Makes one `httpx.AsyncClient` (for instance with
            ``transport=httpx.MockTransport(handler)`` in tests).

    Returns:
        The two specs, to register in place of `http_source`/`http_sink`.
    """

    class FactorySource(HttpSource):
        def _new_client(self) -> httpx.AsyncClient:
            return client_factory()

    class FactorySink(HttpSink):
        def _new_client(self) -> httpx.AsyncClient:
            return client_factory()

    return _source_spec(FactorySource), _sink_spec(FactorySink)


NODES: tuple[NodeSpec, ...] = (http_source, http_sink)
"""This family's node types (its ``flowstream.nodes`` entry point)."""
