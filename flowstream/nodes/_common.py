"""Pieces shared by the built-in node modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import Expr, FnRef, expr_function, resolve_callable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["BATCH_SIZE", "ItemFunction", "item_function"]

BATCH_SIZE = 1024
"""How many items built-in sources put in one batch."""


class ItemFunction(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """A function of the item, as a CEL ``expr`` over ``x`` or a Python ``fn``.

    Exactly one of the two must be set.
    """

    expr: Expr | None = None
    fn: FnRef | None = None

    def __post_init__(self) -> None:
        if (self.expr is None) == (self.fn is None):
            msg = "set exactly one of 'expr' (a CEL expression) or 'fn' ('module:attr')"
            raise ValueError(msg)


def item_function(config: ItemFunction) -> Callable[[Any], Any]:
    """Return the one-argument function a config describes."""
    if config.expr is not None:
        return expr_function(config.expr)
    assert config.fn is not None  # guaranteed by __post_init__
    return resolve_callable(config.fn)
