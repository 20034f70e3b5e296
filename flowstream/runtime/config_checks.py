"""The checks of one node's config: decoded, finite, callables, CEL cost.

`check_config` decodes a node's config with msgspec against its type and
names each wrong field, then finds float settings that are NaN or infinite,
Python callables where none may go, CEL expressions that do not compile or
whose static cost is over the ceiling, and ``"module:attr"`` references that
do not import (or are not allowed, for untrusted workflows). It returns the
decoded config, or `INVALID` once it recorded a problem.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.cel import ASSUMED_INPUT_SIZE
from ..core.expr import (
    ExprError,
    check_expr,
    expr_cost,
    expr_fields,
    resolve_callable,
)
from ..core.live import LiveRef, misplaced_live
from ..core.workflow_files import describe_validation_error
from ..errors import Problem

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..core.node import NodeSpec
    from ..core.workflow import WorkflowNode

__all__ = ["INVALID", "check_config", "check_cost", "non_finite"]


INVALID: Any = object()
"""What `check_config` returns for a config with a problem."""


def check_config(
    decl: WorkflowNode,
    spec: NodeSpec,
    problems: list[Problem],
    allow_callables: bool,
    max_cel_cost: int,
) -> Any:
    """``decl``'s config decoded for ``spec``, or `INVALID`.

    Each problem found goes to ``problems``, naming the node and the field.
    """
    try:
        config = spec.decode_config(decl.config)
    except msgspec.ValidationError as exc:
        message, path = describe_validation_error(exc)
        if not path and spec.config_type is not None:
            # A check in the config's __post_init__ has no path from msgspec;
            # by convention its message starts with the field it is about.
            first = message.split(" ", 1)[0]
            names = {f.encode_name for f in msgspec.structs.fields(spec.config_type)}
            if first in names:
                path = first
        problems.append(
            Problem(message, node=decl.id, field=f"config.{path}" if path else "config")
        )
        return INVALID
    bad = False
    if config is None and decl.retry is None:
        return None  # no settings at all (a plain function node)
    for path, value in non_finite(config, "config", decl.retry):
        # NaN compares false with everything, so range checks let it (and
        # infinity, where only a lower bound is checked) through: an interval
        # of .nan made a timer that never fires and a DAG run that never ends.
        problems.append(
            Problem(f"must be a finite number, got {value}", node=decl.id, field=path)
        )
        bad = True
    if config is None:
        return None
    for path in misplaced_live(config):
        problems.append(
            Problem(
                "takes no Python callable (only expression and function fields do)",
                node=decl.id,
                field=f"config.{path}",
            )
        )
        bad = True
    for path, kind, text in expr_fields(config):
        try:
            if isinstance(text, LiveRef) and not allow_callables:
                msg = f"Python callables are not allowed here ({text!s}); use CEL"
                raise ExprError(msg)
            if kind == "cel":
                check_expr(text)
                check_cost(text, max_cel_cost)
            elif not allow_callables:
                msg = f"Python callables are not allowed here ({text!r}); use CEL"
                raise ExprError(msg)
            else:
                resolve_callable(text)
        except ExprError as exc:
            problems.append(Problem(str(exc), node=decl.id, field=f"config.{path}"))
            bad = True
    return INVALID if bad else config


def non_finite(config: Any, name: str, retry: Any) -> Iterator[tuple[str, float]]:
    """The float settings of a node (its config and retry) that are NaN or inf.

    Only settings: a struct's fields, nested structs included; data inside
    lists and dicts (``source.values``) may be any float.
    """
    stack: list[tuple[str, Any]] = [(name, config), ("retry", retry)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, msgspec.Struct):
            for info in reversed(msgspec.structs.fields(value)):
                stack.append((f"{path}.{info.encode_name}", getattr(value, info.name)))
        elif type(value) is float and not math.isfinite(value):
            yield path, value


def check_cost(text: str, limit: int) -> None:
    """Refuse an expression whose static cost estimate is over ``limit``.

    Raises:
        ExprError: The estimate is over the ceiling, or cannot be made.
    """
    cost = expr_cost(text)
    if cost is None:
        msg = f"the cost of the CEL expression {text!r} cannot be bounded; simplify it"
        raise ExprError(msg)
    if cost > limit:
        msg = (
            f"the CEL expression {text!r} may cost up to {cost:,} steps (lists read "
            f"from the item counted as {ASSUMED_INPUT_SIZE:,} long), over the limit "
            f"of {limit:,}; nest fewer comprehensions"
        )
        raise ExprError(msg)
