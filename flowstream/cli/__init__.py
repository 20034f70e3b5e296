"""The ``flowstream`` command line: validate, run, list node types, serve.

Workflow files in ``mode: routed`` are routed flows (`flowstream.routed`):
``run`` prints their result and the path of steps taken. Dataflow files may
use the ``routed.flow`` node type.

One handler (`main`) maps flowstream's errors to messages and exit codes:
0 success, 1 a failed run, 2 invalid input. It never prints a traceback for an
error the user caused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Each command module registers its command on the group when imported.
from . import info as info, nodes as nodes, run as run, serve as serve
from ._base import EXIT_FAILED as EXIT_FAILED, EXIT_INVALID as EXIT_INVALID, cli as cli

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI (the ``flowstream`` console script)."""
    entry: Callable[..., Any] = cli.main
    entry(args=list(argv) if argv is not None else None, prog_name="flowstream")
