"""Config fields that reach outside the process: files, URLs, listen addresses.

A node type marks each such field in its config type, the same way `Expr`
marks an expression:

* `FilePath`: a file the node opens or creates (a store, a journal, a file
  source or sink);
* `OutboundUrl`: a URL the node connects to;
* `ListenHost`: an address the node binds to accept connections.

On the command line these are taken as written: a workflow file is trusted
like code. The server finds them through the annotations
(`resource_fields`) and confines them: paths into its data directory,
URLs to the hosts it allows, listeners to loopback. A field left unmarked
escapes that policy, so every path, URL and bind address must be marked
(a test checks the registered node types).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

from .markers import Marker, marked_fields

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .markers import MarkedField

__all__ = [
    "RESOURCE_KINDS",
    "FilePath",
    "ListenHost",
    "OutboundUrl",
    "resource_fields",
]

FilePath = Annotated[
    str, Marker("path"), msgspec.Meta(description="a file the node opens")
]
"""A config field naming a file the node opens or creates."""

OutboundUrl = Annotated[
    str, Marker("url"), msgspec.Meta(description="a URL the node connects to")
]
"""A config field holding a URL the node connects to."""

ListenHost = Annotated[
    str, Marker("listen"), msgspec.Meta(description="an address the node binds")
]
"""A config field holding an address the node listens on."""

RESOURCE_KINDS = frozenset({"path", "url", "listen"})
"""The marker kinds of `FilePath`, `OutboundUrl` and `ListenHost`."""


def resource_fields(config: msgspec.Struct) -> Iterator[MarkedField]:
    """Yield every `FilePath`, `OutboundUrl` and `ListenHost` value of a config."""
    return marked_fields(config, RESOURCE_KINDS)
