"""What a step returns: an `Action` that picks the next step, and conditions.

A step's ``execute(ctx)`` ends with one of four actions::

    return Action.simple("process")                      # go to a step
    return Action.parameterized("process", {"page": 2})  # ... with parameters
    return Action.conditional(KeyExists("user_authenticated"),
                              "authenticated_flow", "login_flow")
    return Action.complete({"user": "alice"})            # end with a result

Returning None follows the step's only route (or, from a step with no routes,
completes the flow with no result). The branches of a conditional action are
step ids or actions themselves, so a branch may carry parameters or complete.

Conditions are read from the run's shared store when the action is resolved:
`KeyExists`, `KeyEquals`, and `ExprCondition` (a CEL expression over ``store``,
every key of the store, and ``params``, the parameters the step received). A
custom condition is any object with an async ``evaluate(store, params)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, final

import msgspec

from ..core.expr import compile_expr

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .store import SharedStore

__all__ = [
    "Action",
    "ActionKind",
    "Condition",
    "ExprCondition",
    "KeyEquals",
    "KeyExists",
]

ActionKind = Literal["simple", "parameterized", "conditional", "complete"]


class Condition(Protocol):
    """Anything a conditional `Action` can branch on."""

    async def evaluate(self, store: SharedStore, params: Mapping[str, Any]) -> bool:
        """Return whether the condition holds now."""
        ...


class KeyExists(msgspec.Struct, frozen=True):
    """True when the shared store holds ``key`` (whatever its value)."""

    key: str

    async def evaluate(self, store: SharedStore, params: Mapping[str, Any]) -> bool:
        """Return whether the store holds the key."""
        return await store.has(self.key)

    def __str__(self) -> str:
        return f"key {self.key!r} exists"


class KeyEquals(msgspec.Struct, frozen=True):
    """True when the store holds ``key`` and its value equals ``value``.

    The stored value is compared as it reads back untyped (JSON-like: a struct
    reads back as a dict), so compare with plain values.
    """

    key: str
    value: Any

    async def evaluate(self, store: SharedStore, params: Mapping[str, Any]) -> bool:
        """Return whether the stored value equals ``value`` (False if absent)."""
        found = await store.get(self.key, default=_ABSENT)
        return found is not _ABSENT and bool(found == self.value)

    def __str__(self) -> str:
        return f"key {self.key!r} == {self.value!r}"


class ExprCondition(msgspec.Struct, frozen=True):
    """A CEL expression over ``store`` (a map of every key) and ``params``.

    Compiled when made, so a typo fails at once: ``ExprCondition("store.n <
    3")``; ``has(store.user)`` tests for a key. The result must be a bool.

    Raises:
        ExprError: The expression does not compile (when constructed).
    """

    expr: str

    def __post_init__(self) -> None:
        compile_expr(self.expr)

    async def evaluate(self, store: SharedStore, params: Mapping[str, Any]) -> bool:
        """Evaluate the expression on a snapshot of the store.

        Raises:
            TypeError: The expression gave something other than a bool.
        """
        value = compile_expr(self.expr).execute(
            {"store": await store.snapshot(), "params": dict(params)}
        )
        if not isinstance(value, bool):
            msg = f"condition {self.expr!r} gave {type(value).__name__}, not a bool"
            raise TypeError(msg)
        return value

    def __str__(self) -> str:
        return self.expr


class _Absent:
    pass


_ABSENT: Any = _Absent()


@final
class Action:
    """The next move of a routed flow, returned by a step's ``execute``.

    Make one with `simple`, `parameterized`, `conditional` or `complete`.

    Attributes:
        kind: Which of the four it is.
        target: The next step (simple and parameterized).
        params: What the next step receives as ``ctx.params``.
        condition: What a conditional action branches on.
        if_true: The branch taken when the condition holds.
        if_false: The branch taken otherwise.
        result: The flow's result (complete).
    """

    __slots__ = (
        "condition",
        "if_false",
        "if_true",
        "kind",
        "params",
        "result",
        "target",
    )

    kind: ActionKind
    target: str | None
    params: dict[str, Any]
    condition: Condition | None
    if_true: str | Action | None
    if_false: str | Action | None
    result: Any

    def __init__(
        self,
        kind: ActionKind,
        *,
        target: str | None = None,
        params: Mapping[str, Any] | None = None,
        condition: Condition | None = None,
        if_true: str | Action | None = None,
        if_false: str | Action | None = None,
        result: Any = None,
    ) -> None:
        self.kind = kind
        self.target = target
        self.params = dict(params or {})
        self.condition = condition
        self.if_true = if_true
        self.if_false = if_false
        self.result = result

    @classmethod
    def simple(cls, target: str) -> Action:
        """Go to step ``target``."""
        return cls("simple", target=target)

    @classmethod
    def parameterized(cls, target: str, params: Mapping[str, Any]) -> Action:
        """Go to step ``target``, which receives ``params`` as ``ctx.params``."""
        return cls("parameterized", target=target, params=params)

    @classmethod
    def conditional(
        cls, condition: Condition, if_true: str | Action, if_false: str | Action
    ) -> Action:
        """Take ``if_true`` when ``condition`` holds on the store, else ``if_false``.

        Each branch is a step id or another action.
        """
        return cls(
            "conditional", condition=condition, if_true=if_true, if_false=if_false
        )

    @classmethod
    def complete(cls, result: Any = None) -> Action:
        """End the flow; ``result`` becomes the run's result."""
        return cls("complete", result=result)

    def targets(self) -> list[str]:
        """Every step this action may lead to (both branches of a conditional)."""
        if self.kind == "conditional":
            found: list[str] = []
            for branch in (self.if_true, self.if_false):
                if isinstance(branch, Action):
                    found += branch.targets()
                elif branch is not None:
                    found.append(branch)
            return found
        return [self.target] if self.target is not None else []

    async def resolve(self, store: SharedStore, params: Mapping[str, Any]) -> Action:
        """Evaluate conditions until a simple, parameterized or complete action.

        ``params`` are the parameters the current step received.
        """
        action = self
        while action.kind == "conditional":
            assert action.condition is not None
            holds = await action.condition.evaluate(store, params)
            branch = action.if_true if holds else action.if_false
            if isinstance(branch, Action):
                action = branch
            else:
                action = Action.simple(str(branch))
        return action

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Action):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.kind == "simple":
            return f"Action.simple({self.target!r})"
        if self.kind == "parameterized":
            return f"Action.parameterized({self.target!r}, {self.params!r})"
        if self.kind == "conditional":
            return (
                f"Action.conditional({self.condition!r}, "
                f"{self.if_true!r}, {self.if_false!r})"
            )
        return f"Action.complete({self.result!r})"
