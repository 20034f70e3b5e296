"""`ServerConfig`: everything ``flowstream serve`` can be told."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.cel import SERVER_MAX_COST
from ..core.sandbox import DEFAULT_MEMORY_PAGES, DEFAULT_TIME_LIMIT_MS
from ..runtime.netpolicy import NetPolicy

if TYPE_CHECKING:
    from ..runtime.registry import NodeRegistry

__all__ = ["DENIED_NODE_TYPES", "UPLOAD_GRANTS", "ServerConfig", "is_loopback"]

DENIED_NODE_TYPES: tuple[str, ...] = (
    "file.source",
    "file.sink",
    "sqlite.source",
    "sqlite.sink",
    "stdio.source",
    "stdio.sink",
    "routed.flow",
)
"""Node types an HTTP client may not use unless the server allows them.

They read or write the server's own files and standard streams, or import
Python modules (``routed.flow`` names a flow as a file or ``module:attr``):
whoever may upload a workflow would get the server's file system.
"""

UPLOAD_GRANTS: tuple[str, ...] = ("clock", "random")
"""The WASI capabilities an uploaded sandboxed node may be granted: never
``files`` (nor networking, which no workflow can grant)."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How a flowstream server runs.

    Attributes:
        db: The SQLite file holding workflows and run records.
        host: The address the server binds; anything but loopback makes every
            endpoint require the token, reads included.
        token: The bearer token; None takes ``FLOWSTREAM_TOKEN``, then the
            token file, and generates one at first start.
        token_file: Where a generated token is kept (mode 0600); None means
            beside the database, ``<db>.token``.
        allow_modules: Modules (and their submodules) whose callables an
            uploaded workflow may name as ``fn: "module:attr"``.
        allow_nodes: Node types of `DENIED_NODE_TYPES` to allow anyway.
        data_dir: The only directory uploaded workflows' files may be in
            (checkpoint stores, journals, file and SQLite sources and
            sinks); None means beside the database, ``<db>.data``.
        allow_net: ``HOST[:PORT]`` patterns outbound nodes of uploaded
            workflows may reach (`flowstream.runtime.netpolicy.NetPolicy`);
            empty, the default, reaches nothing.
        allow_private_net: Let them reach loopback, link-local, private,
            multicast and reserved addresses too (still only the allowed
            hosts).
        allow_listen: Addresses beyond loopback their listening nodes may
            bind (``0.0.0.0`` for every interface).
        allow_hosts: ``Host`` names the server answers to besides
            loopback's and ``host`` (`flowstream.server.hosts`).
        max_body_bytes: The largest request body accepted (413 beyond).
        max_runs: How many runs may be active at once (429 beyond).
        drain_timeout: Seconds a stop may drain before the run is cancelled.
        sample_interval: Seconds between two readings of a run's counters
            (rates, channel fill, metrics).
        history_head: Events kept from the start of each run, for late
            WebSocket subscribers and the run record.
        history_tail: Latest events kept on top of those.
        max_output_items: Values kept per output port of a finished run.
        max_cel_cost: The ceiling on a CEL expression's cost in an uploaded
            workflow: its static estimate at validation, and the steps one
            evaluation may take (``flowstream serve`` sets it process-wide).
        sandbox_time_limit_ms: The most ``limits.time_limit_ms`` an uploaded
            sandboxed node (``wasm.*``) may ask for; its default must fit too.
        sandbox_memory_pages: The most ``limits.memory_pages`` it may ask for.
        registry: Node types; None means the built-ins and installed packs.
    """

    db: str | Path = "flowstream.db"
    host: str = "127.0.0.1"
    token: str | None = None
    token_file: str | Path | None = None
    allow_modules: tuple[str, ...] = ()
    allow_nodes: tuple[str, ...] = ()
    data_dir: str | Path | None = None
    allow_net: tuple[str, ...] = ()
    allow_private_net: bool = False
    allow_listen: tuple[str, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    max_runs: int = 8
    drain_timeout: float = 10.0
    sample_interval: float = 0.5
    history_head: int = 256
    history_tail: int = 1024
    max_output_items: int = 10_000
    max_cel_cost: int = SERVER_MAX_COST
    sandbox_time_limit_ms: float = DEFAULT_TIME_LIMIT_MS
    sandbox_memory_pages: int = DEFAULT_MEMORY_PAGES
    registry: NodeRegistry | None = None

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_runs",
            "history_head",
            "history_tail",
            "max_cel_cost",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"{name} must be an int >= 1, got {value!r}"
                raise ValueError(msg)
        if not 0 < self.sandbox_time_limit_ms < float("inf"):
            msg = (
                "sandbox_time_limit_ms must be a finite number > 0, "
                f"got {self.sandbox_time_limit_ms!r}"
            )
            raise ValueError(msg)
        if not 1 <= self.sandbox_memory_pages <= 65_536:
            msg = (
                "sandbox_memory_pages must be from 1 to 65536, "
                f"got {self.sandbox_memory_pages!r}"
            )
            raise ValueError(msg)
        if not self.sample_interval > 0:
            msg = f"sample_interval must be > 0, got {self.sample_interval!r}"
            raise ValueError(msg)
        self.net_policy  # noqa: B018 (a bad pattern is refused at start)

    @property
    def net_policy(self) -> NetPolicy:
        """What uploaded workflows may reach and where they may listen.

        Raises:
            ValueError: An allow pattern or address does not parse.
        """
        return NetPolicy(
            allow=self.allow_net,
            allow_private=self.allow_private_net,
            allow_listen=self.allow_listen,
        )

    @property
    def data_path(self) -> Path:
        """The directory uploaded workflows' files resolve in."""
        if self.data_dir is not None:
            return Path(self.data_dir)
        db = Path(self.db)
        return db.with_name(db.name + ".data")

    @property
    def loopback(self) -> bool:
        """Whether the server listens on a loopback address only."""
        return is_loopback(self.host)

    @property
    def token_path(self) -> Path:
        """The file that holds a generated token."""
        if self.token_file is not None:
            return Path(self.token_file)
        db = Path(self.db)
        return db.with_name(db.name + ".token")

    def node_type_allowed(self, type_id: str) -> bool:
        """Whether an uploaded workflow may use this node type."""
        return type_id not in DENIED_NODE_TYPES or type_id in self.allow_nodes

    def module_allowed(self, module: str) -> bool:
        """Whether callables of this module may be named by uploaded workflows."""
        return any(
            module == allowed or module.startswith(allowed + ".")
            for allowed in self.allow_modules
        )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
