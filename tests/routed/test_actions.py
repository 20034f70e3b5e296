"""Each kind of action, parameters, and conditions over the shared store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from flowstream.routed import (
    Action,
    ExprCondition,
    Flow,
    KeyEquals,
    KeyExists,
    SharedStore,
    StepContext,
)

if TYPE_CHECKING:
    from flowstream.routed.flow import FlowBuilder


def record(name: str, seen: list[tuple[str, dict[str, Any]]], action: Action | None):
    async def step(ctx: StepContext) -> Action | None:
        seen.append((name, dict(ctx.params)))
        return action

    return step


def two_way(first: Any, seen: list[tuple[str, dict[str, Any]]]) -> FlowBuilder:
    return (
        Flow.builder("two-way")
        .add_node("first", first)
        .add_node("yes", record("yes", seen, Action.complete("yes")))
        .add_node("no", record("no", seen, Action.complete("no")))
        .add_route("first", "yes")
        .add_route("first", "no")
    )


async def test_simple_action_goes_to_the_named_step() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    flow = two_way(record("first", seen, Action.simple("no")), seen).build()
    result = await flow.arun()
    assert result.ok
    assert result.result == "no"
    assert result.path == ["first", "no"]
    assert seen == [("first", {}), ("no", {})]


async def test_parameters_reach_the_next_step() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    action = Action.parameterized("yes", {"page": 2, "query": "cats"})
    flow = two_way(record("first", seen, action), seen).build()
    result = await flow.arun(params={"start": True})
    assert result.result == "yes"
    assert seen == [("first", {"start": True}), ("yes", {"page": 2, "query": "cats"})]


async def test_parameters_last_one_step_only() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    flow = (
        Flow.builder("p")
        .add_node("a", record("a", seen, Action.parameterized("b", {"x": 1})))
        .add_node("b", record("b", seen, Action.simple("c")))
        .add_node("c", record("c", seen, None))
        .add_route("a", "b")
        .add_route("b", "c")
        .build()
    )
    assert (await flow.arun()).ok
    assert seen == [("a", {}), ("b", {"x": 1}), ("c", {})]


async def test_complete_ends_with_a_result() -> None:
    async def only(ctx: StepContext) -> Action:
        return Action.complete({"answer": 42})

    result = await Flow.builder("c").add_node("only", only).build().arun()
    assert result.ok
    assert result.result == {"answer": 42}
    assert result.path == ["only"]
    assert result.steps == 1


@pytest.mark.parametrize(
    ("inputs", "taken"),
    [
        ({"user_authenticated": True}, "yes"),
        ({}, "no"),
        ({"user_authenticated": None}, "yes"),
    ],
)
async def test_conditional_on_key_exists(inputs: dict[str, Any], taken: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    action = Action.conditional(KeyExists("user_authenticated"), "yes", "no")
    flow = two_way(record("first", seen, action), seen).build()
    result = await flow.arun(inputs=inputs)
    assert result.result == taken
    assert result.path == ["first", taken]


@pytest.mark.parametrize(
    ("inputs", "taken"),
    [({"role": "admin"}, "yes"), ({"role": "guest"}, "no"), ({}, "no")],
)
async def test_conditional_on_key_equals(inputs: dict[str, Any], taken: str) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    action = Action.conditional(KeyEquals("role", "admin"), "yes", "no")
    flow = two_way(record("first", seen, action), seen).build()
    assert (await flow.arun(inputs=inputs)).result == taken


@pytest.mark.parametrize(
    ("inputs", "params", "taken"),
    [
        ({"tries": 1}, {}, "yes"),
        ({"tries": 5}, {}, "no"),
        ({"tries": 1}, {"force": True}, "no"),
    ],
)
async def test_conditional_on_a_cel_expression(
    inputs: dict[str, Any], params: dict[str, Any], taken: str
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    condition = ExprCondition("store.tries < 3 && !has(params.force)")
    flow = two_way(
        record("first", seen, Action.conditional(condition, "yes", "no")), seen
    )
    assert (await flow.build().arun(inputs=inputs, params=params)).result == taken


async def test_conditions_see_what_the_step_just_stored() -> None:
    async def first(ctx: StepContext) -> Action:
        await ctx.store.set("ready", True)
        return Action.conditional(KeyEquals("ready", True), "yes", "no")

    flow = two_way(first, []).build()
    assert (await flow.arun()).result == "yes"


async def test_branches_may_be_actions() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    action = Action.conditional(
        KeyExists("cached"),
        Action.complete("from cache"),
        Action.parameterized("no", {"reason": "miss"}),
    )
    flow = two_way(record("first", seen, action), seen).build()
    hit = await flow.arun(inputs={"cached": 1})
    assert (hit.result, hit.path) == ("from cache", ["first"])
    miss = await flow.arun()
    assert (miss.result, miss.path) == ("no", ["first", "no"])
    assert seen[-1] == ("no", {"reason": "miss"})


async def test_nested_conditionals() -> None:
    action = Action.conditional(
        KeyExists("a"),
        Action.conditional(KeyEquals("a", 1), "yes", "no"),
        "no",
    )
    assert action.targets() == ["yes", "no", "no"]
    flow = two_way(record("first", [], action), []).build()
    assert (await flow.arun(inputs={"a": 1})).result == "yes"
    assert (await flow.arun(inputs={"a": 2})).result == "no"


async def test_a_custom_condition() -> None:
    class Even:
        async def evaluate(self, store: SharedStore, params: Any) -> bool:
            return await store.get("n", type=int) % 2 == 0

    flow = two_way(record("first", [], Action.conditional(Even(), "yes", "no")), [])
    assert (await flow.build().arun(inputs={"n": 4})).result == "yes"
    assert (await flow.build().arun(inputs={"n": 3})).result == "no"


async def test_a_condition_that_is_not_a_bool_fails_the_step() -> None:
    action = Action.conditional(ExprCondition("store.n + 1"), "yes", "no")
    flow = two_way(record("first", [], action), []).build()
    result = await flow.arun(inputs={"n": 1})
    assert not result.ok
    assert result.failed_node == "first"
    assert "gave int, not a bool" in (result.error or "")


def test_a_condition_that_does_not_compile_fails_at_once() -> None:
    with pytest.raises(ValueError, match="invalid CEL expression"):
        ExprCondition("store.n <")


async def test_no_action_follows_the_only_route_or_ends() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    flow = (
        Flow.builder("n")
        .add_node("a", record("a", seen, None))
        .add_node("b", record("b", seen, None))
        .add_route("a", "b")
        .build()
    )
    result = await flow.arun()
    assert result.ok
    assert result.result is None
    assert result.path == ["a", "b"]


async def test_no_action_with_two_routes_fails_naming_them() -> None:
    flow = two_way(record("first", [], None), []).build()
    result = await flow.arun()
    assert result.status == "failed"
    assert result.failed_node == "first"
    assert "2 routes (yes, no)" in (result.error or "")


async def test_an_action_must_follow_a_route() -> None:
    flow = (
        Flow.builder("r")
        .add_node("a", record("a", [], Action.simple("c")))
        .add_node("b", record("b", [], None))
        .add_node("c", record("c", [], None))
        .add_route("a", "b")
        .add_route("b", "c")
        .build()
    )
    result = await flow.arun()
    assert not result.ok
    assert result.error == (
        "step 'a' chose 'c', but the flow has no route a -> c (routes from 'a': b)"
    )


async def test_returning_something_else_fails_the_step() -> None:
    async def wrong(ctx: StepContext) -> Any:
        return "next"

    result = await Flow.builder("w").add_node("wrong", wrong).build().arun()
    assert not result.ok
    assert "execute returned str; return an Action or None" in (result.error or "")


def test_actions_compare_and_show_themselves() -> None:
    assert Action.simple("a") == Action.simple("a")
    assert Action.simple("a") != Action.simple("b")
    assert Action.parameterized("a", {"x": 1}).params == {"x": 1}
    assert (
        repr(Action.parameterized("a", {"x": 1}))
        == "Action.parameterized('a', {'x': 1})"
    )
    assert repr(Action.complete(3)) == "Action.complete(3)"
    assert "KeyExists" in repr(Action.conditional(KeyExists("k"), "a", "b"))
    assert Action.complete().targets() == []
    assert str(KeyEquals("k", 1)) == "key 'k' == 1"
