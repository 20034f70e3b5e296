"""What a sandboxed node may use: `Limits`, and the `SandboxedConfig` base.

A sandboxed node runs code its workflow's author did not have to be trusted
for (a WebAssembly module, say): its config derives from `SandboxedConfig`,
so that the limits sit in one place, under ``limits``, where the runtime
enforces them and a server can hold uploads to its own ceilings without
knowing the node type (``GET /api/nodes`` shows them).
"""

from __future__ import annotations

import math
from typing import Literal, TypeAlias

import msgspec

from .resources import FilePath

__all__ = [
    "DEFAULT_MEMORY_PAGES",
    "DEFAULT_TIME_LIMIT_MS",
    "GRANTS",
    "PAGE_BYTES",
    "Grant",
    "Limits",
    "SandboxedConfig",
]

Grant: TypeAlias = Literal["clock", "random", "files"]
"""A WASI capability a workflow may grant (read the clocks, get random
bytes, open files under ``limits.dirs``). Networking cannot be granted."""

GRANTS: tuple[Grant, ...] = ("clock", "random", "files")
PAGE_BYTES = 65_536
"""The size of one WebAssembly linear-memory page."""
DEFAULT_TIME_LIMIT_MS = 1000.0
DEFAULT_MEMORY_PAGES = 256  # 16 MiB


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limits of one sandboxed node, enforced by the runtime.

    Attributes:
        time_limit_ms: Wall-clock time one call (one batch) may take; a call
            still running then is stopped and fails ("time limit exceeded").
        memory_pages: The most 64 KiB pages the module's linear memory may
            grow to; growing beyond fails (``memory.grow`` returns -1).
        wasi: The WASI capabilities granted; none by default, and a module
            that imports a WASI function outside them does not load.
        dirs: Host directories a ``files`` grant opens to the module (each
            under its own path); only with ``files``. Paths (`FilePath`):
            a server resolves them in its data directory.
    """

    time_limit_ms: float = DEFAULT_TIME_LIMIT_MS
    memory_pages: int = DEFAULT_MEMORY_PAGES
    wasi: tuple[Grant, ...] = ()
    dirs: tuple[FilePath, ...] = ()

    def __post_init__(self) -> None:
        # Written as "not <" so that NaN is refused too.
        if not (0 < self.time_limit_ms < math.inf):
            msg = f"time_limit_ms must be a finite number > 0, got {self.time_limit_ms}"
            raise ValueError(msg)
        if not 1 <= self.memory_pages <= 65_536:
            msg = f"memory_pages must be from 1 to 65536, got {self.memory_pages}"
            raise ValueError(msg)
        if self.dirs and "files" not in self.wasi:
            msg = "dirs needs the 'files' grant in wasi"
            raise ValueError(msg)

    @property
    def memory_bytes(self) -> int:
        """``memory_pages`` in bytes."""
        return self.memory_pages * PAGE_BYTES


class SandboxedConfig(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """Base of a sandboxed node's config: its `Limits` under ``limits``."""

    limits: Limits = Limits()

    def host_paths(self) -> list[tuple[str, str]]:
        """``(field, path)`` for each host path the config reads, unmarked.

        Paths marked `FilePath` are left out: a server resolves those in
        its data directory. A server refuses uploads that name any other.
        """
        return []
