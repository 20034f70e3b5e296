"""Debugging nodes: look at items as they pass, without changing them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import Expr, expr_function
from ..core.node import node
from ._rescaling import rescale_sequence

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..core.node import NodeContext

__all__ = ["log"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class Log(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config of ``debug.log``.

    Attributes:
        level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        expr: What to log, a CEL expression over the item ``x``; the whole
            item when omitted.
        every: Log only items number 1, every+1, 2*every+1, ...
        message: The log message's text before the value.
    """

    level: str = "info"
    expr: Expr | None = None
    every: int = 1
    message: str = "item"

    def __post_init__(self) -> None:
        if self.level.lower() not in LEVELS:
            msg = f"level must be one of {', '.join(LEVELS)}; got {self.level!r}"
            raise ValueError(msg)
        if self.every < 1:
            msg = f"every must be >= 1, got {self.every}"
            raise ValueError(msg)


@node("debug.log", config=Log, rescale=rescale_sequence)
async def log(
    inp: AsyncIterator[Any], *, config: Log, ctx: NodeContext
) -> AsyncIterator[Any]:
    """Log items (or a projection of them) and pass every item on unchanged.

    Stream-safe. Logs through stdlib `logging` on the logger
    ``flowstream.node.<id>``, one record per logged item, with the extras
    ``node_id``, ``seq`` (the item's 1-based number) and ``item`` (the logged
    value). When that logger does not log at ``level``, ``expr`` is not
    evaluated at all; when it does, an ``expr`` that fails on an item is a
    failure of that item (as in any node).

    Example:
        ``{id: peek, type: debug.log, config: {expr: "x.id", every: 2}}``
        turns ``[{id: 1}, {id: 2}, {id: 3}]``
        into ``[{id: 1}, {id: 2}, {id: 3}]`` (logging ``1`` and ``3``).
    """
    project = None if config.expr is None else expr_function(config.expr)
    level = LEVELS[config.level.lower()]
    every = config.every
    text = config.message.replace("%", "%%") + " #%d: %r"
    logger = ctx.logger
    state = ctx.state
    # The count is node state so that a restart after a failed item keeps it.
    seq: int = state.get("seq", 0)
    async for x in inp:
        if seq % every == 0 and logger.isEnabledFor(level):
            value = x if project is None else project(x)
            extra = {"node_id": ctx.node_id, "seq": seq + 1, "item": value}
            logger.log(level, text, seq + 1, value, extra=extra)
        seq += 1
        state["seq"] = seq
        yield x
