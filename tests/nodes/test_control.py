from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import subprocess
import sys
import zlib
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from flowstream import default_registry
from flowstream.core.node import node
from flowstream.core.workflow import ContinueOnError, Workflow
from flowstream.errors import WorkflowValidationError
from flowstream.nodes import control, http, join
from flowstream.runtime.validation import validate
from flowstream.testing import run_nodes, run_virtual, run_workflow

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator

    from flowstream.core.node import NodeSpec
    from flowstream.runtime.registry import NodeRegistry

SPECS = [
    control.merge,
    control.zip_items,
    control.route,
    control.split,
    join.window_join,
    join.lookup_join,
    http.http_request,
]


# --- helpers shared with test_join and test_http ------------------------------------


class Drip(msgspec.Struct, frozen=True, kw_only=True):
    values: list[Any]
    pauses: list[int] = []


@node("test.drip", config=Drip)
async def drip(*, config: Drip) -> AsyncIterator[Any]:
    """Emit the values one at a time, yielding to the loop between them."""
    for i, value in enumerate(config.values):
        yield value
        pause = config.pauses[i % len(config.pauses)] if config.pauses else 1
        for _ in range(pause):
            await asyncio.sleep(0)


def registry() -> NodeRegistry:
    reg = default_registry(entry_points=False)
    for spec in [*SPECS, drip]:
        reg.register(spec, replace=True)
    return reg


_EXAMPLE = re.compile(
    r"``(\{id:.*?\})``\s+turns\s+``(.*?)``\s+into\s+``(.*?)``(\s+\(in any order)?"
)


class Example(msgspec.Struct):
    decl: dict[str, Any]
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    any_order: bool


def docstring_example(spec: NodeSpec) -> Example:
    """Read a node type's ``Example:``: declaration, inputs and outputs by port.

    Inputs and outputs are written as a list (ports ``in`` and ``out``) or
    as a mapping of ports to lists.
    """
    doc = inspect.getdoc(spec.fn) or ""
    assert "Example:" in doc, spec.type_id
    assert "stream-safe" in doc.lower() or "needs end of input" in doc.lower()
    found = _EXAMPLE.search(" ".join(doc.split()))
    assert found is not None, f"{spec.type_id}: no runnable example"
    decl, inp, out = (msgspec.yaml.decode(g.encode()) for g in found.groups()[:3])
    assert decl["type"] == spec.type_id
    return Example(
        decl=decl,
        inputs=inp if isinstance(inp, dict) else {"in": inp},
        outputs=out if isinstance(out, dict) else {"out": out},
        any_order=found.group(4) is not None,
    )


def canonical(items: list[Any]) -> list[bytes]:
    return sorted(msgspec.json.encode(x, order="sorted") for x in items)


async def check_example(spec: NodeSpec, reg: NodeRegistry | None = None) -> None:
    example = docstring_example(spec)
    before = asyncio.all_tasks()
    for fuse in (True, False):
        got = await run_nodes(
            spec,
            example.inputs,
            example.decl.get("config"),
            registry=reg or registry(),
            fuse=fuse,
        )
        got = {k: v for k, v in got.items() if v or k in example.outputs}
        if example.any_order:
            assert {k: canonical(v) for k, v in got.items()} == {
                k: canonical(v) for k, v in example.outputs.items()
            }
        else:
            assert got == example.outputs, f"{spec.type_id} (fuse={fuse})"
    assert asyncio.all_tasks() == before


def problems(
    type_id: str, config: dict[str, Any], ports: tuple[str, ...] = ("in",)
) -> list[str]:
    """The validation problems of node ``n`` with this config (all ports fed)."""
    wf = (
        Workflow("v")
        .node("src", "source.values", values=[1])
        .node("n", type_id, config)
    )
    for port in ports:
        wf.connect(f"src -> n.{port}")
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    found = [str(p) for p in info.value.problems if p.node == "n"]
    assert found, info.value
    return found


# --- every node type here ---------------------------------------------------------


CONTROL = [control.merge, control.zip_items, control.route, control.split]


@pytest.mark.parametrize("spec", CONTROL, ids=lambda s: s.type_id)
async def test_docstring_example_runs(spec: NodeSpec) -> None:
    assert spec.description
    await check_example(spec)


@pytest.mark.parametrize("spec", CONTROL, ids=lambda s: s.type_id)
def test_unknown_config_field_is_named(spec: NodeSpec) -> None:
    example = docstring_example(spec)
    config = {**example.decl["config"], "bogus": 1}
    found = problems(spec.type_id, config, tuple(example.inputs))
    assert any("config.bogus" in p for p in found), found


# --- merge ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dag", "stream"])
@pytest.mark.parametrize("fuse", [True, False])
async def test_merge_keeps_order_within_each_input(mode: str, fuse: bool) -> None:
    inputs = {p: [f"{p}{i}" for i in range(3000)] for p in ("a", "b", "c")}
    wf = Workflow("m", mode=mode)  # type: ignore[arg-type]
    for port, values in inputs.items():
        wf.node(f"src_{port}", "test.drip", values=values, pauses=[0, 0, 1])
        wf.connect(f"src_{port} -> both.{port}")
    wf.node("both", "control.merge", inputs=["a", "b", "c"])
    wf.node("out", "sink.collect").connect("both -> out")
    result = await run_workflow(wf, registry(), fuse=fuse)
    assert result.ok, result.error
    got = result.output("out")
    assert sorted(got) == sorted(x for v in inputs.values() for x in v)
    for port, values in inputs.items():
        assert [x for x in got if x.startswith(port)] == values
    # The inputs were drip-fed side by side: the merge interleaved them.
    assert got[: len(inputs["a"])] != inputs["a"]


async def test_merge_default_port_takes_several_producers() -> None:
    wf = (
        Workflow("m")
        .node("one", "source.values", values=[1, 2])
        .node("two", "source.values", values=[3])
        .node("both", "control.merge")
        .node("out", "sink.collect")
        .connect("one -> both")
        .connect("two -> both")
        .connect("both -> out")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert sorted(result.output("out")) == [1, 2, 3]


async def test_merge_tags_items_with_their_input() -> None:
    got = await run_nodes(
        control.merge,
        {"x": [1], "y": [2, 3]},
        {"inputs": ["x", "y"], "tag": True},
        registry=registry(),
    )
    assert canonical(got["out"]) == canonical(
        [
            {"input": "x", "item": 1},
            {"input": "y", "item": 2},
            {"input": "y", "item": 3},
        ]
    )


async def test_merge_of_empty_inputs_ends() -> None:
    got = await run_nodes(
        control.merge, {"a": [], "b": []}, {"inputs": ["a", "b"]}, registry=registry()
    )
    assert got["out"] == []


def test_merge_config_problems() -> None:
    assert any(
        "at least one port" in p for p in problems("control.merge", {"inputs": []}, ())
    )
    found = problems("control.merge", {"inputs": ["a", "a"]}, ("a",))
    assert any("'a' appears twice" in p for p in found)
    found = problems("control.merge", {"inputs": ["a.b"]}, ())
    assert any("port name 'a.b'" in p for p in found)


def test_merge_ports_are_checked_against_the_config() -> None:
    wf = (
        Workflow("m")
        .node("src", "source.values", values=[1])
        .node("both", "control.merge", inputs=["a", "b"])
        .connect("src -> both.a")
        .connect("src -> both.c")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, registry())
    text = str(info.value)
    assert "no input port 'c'" in text
    assert "input port 'b' is not connected" in text


# --- zip -----------------------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False])
async def test_zip_emits_lists_and_stops_at_the_shortest(fuse: bool) -> None:
    got = await run_nodes(
        control.zip_items,
        {"left": list(range(5000)), "right": ["a", "b", "c"]},
        registry=registry(),
        fuse=fuse,
    )
    assert got["out"] == [[0, "a"], [1, "b"], [2, "c"]]


@pytest.mark.parametrize("mode", ["dag", "stream"])
async def test_zip_of_three_branches_of_one_source(mode: str) -> None:
    wf = (
        Workflow("z", mode=mode)  # type: ignore[arg-type]
        .node("src", "source.range", stop=2000)
        .node("double", "transform.map", expr="x * 2")
        .node("square", "transform.map", expr="x * x")
        .node("z", "control.zip", inputs=["n", "double", "square"], as_dict=True)
        .node("out", "sink.collect")
        .connect("src -> z.n")
        .connect("src -> double")
        .connect("src -> square")
        .connect("double -> z.double")
        .connect("square -> z.square")
        .connect("z -> out")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    got = result.output("out")
    assert got == [{"n": i, "double": 2 * i, "square": i * i} for i in range(2000)]


async def test_zip_with_an_empty_input_emits_nothing_and_ends() -> None:
    wf = (
        Workflow("z", mode="stream")
        .node("long", "source.range", stop=100_000)
        .node("none", "source.values", values=[])
        .node("z", "control.zip")
        .node("out", "sink.collect")
        .connect("long -> z.left")
        .connect("none -> z.right")
        .connect("z -> out")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert result.output("out") == []


def test_zip_config_problems() -> None:
    found = problems("control.zip", {"inputs": ["error", "x y"]}, ())
    assert any("port name 'x y'" in p for p in found)
    found = problems("control.zip", {"as_dict": "yes"}, ("left", "right"))
    assert any("config.as_dict" in p for p in found)


# --- route ---------------------------------------------------------------------------


ROUTES = {"even": "x % 2 == 0", "big": "x > 100", "small": "x < 10"}


@pytest.mark.parametrize("fuse", [True, False])
async def test_route_sends_to_every_match_or_default(fuse: bool) -> None:
    got = await run_nodes(
        control.route,
        {"in": [1, 2, 50, 51, 102, 103]},
        {"routes": ROUTES},
        registry=registry(),
        fuse=fuse,
    )
    assert got["even"] == [2, 50, 102]
    assert got["big"] == [102, 103]
    assert got["small"] == [1, 2]
    assert got["default"] == [51]
    assert got["out"] == []


async def test_route_first_match_follows_the_written_order() -> None:
    got = await run_nodes(
        control.route,
        {"in": [1, 2, 50, 51, 102, 103]},
        {"routes": ROUTES, "first_match": True},
        registry=registry(),
    )
    assert got["even"] == [2, 50, 102]
    assert got["big"] == [103]
    assert got["small"] == [1]
    assert got["default"] == [51]


async def test_route_ports_connect_by_name() -> None:
    wf = (
        Workflow("r", mode="stream")
        .node("src", "source.range", stop=20)
        .node("r", "control.route", routes={"fizz": "x % 3 == 0"})
        .node("fizz", "sink.collect")
        .node("rest", "sink.collect")
        .connect("src -> r")
        .connect("r.fizz -> fizz")
        .connect("r.default -> rest")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    assert result.output("fizz") == [0, 3, 6, 9, 12, 15, 18]
    assert result.output("rest") == [x for x in range(20) if x % 3]


async def test_route_predicate_that_is_not_a_bool_is_an_item_failure() -> None:
    wf = (
        Workflow("r")
        .node("src", "source.values", values=[{"n": 1}, {"n": "a"}, {"n": 2}])
        .node(
            "r",
            "control.route",
            routes={"one": "x.n == 1", "sized": "x.n"},
            error_handling=ContinueOnError(),
        )
        .connect("src -> r")
    )
    result = await run_workflow(wf, registry())
    assert result.ok, result.error
    # Nothing is sent for an item whose predicates fail, not even a partial match.
    assert result.output("r", "one") == []
    assert [d.item for d in result.dead_letters] == [{"n": 1}, {"n": "a"}, {"n": 2}]
    assert "'sized'" in result.dead_letters[0].reason
    assert "must give a bool, got int" in result.dead_letters[0].reason


def test_route_config_problems() -> None:
    found = problems("control.route", {"routes": {}})
    assert any("at least one port" in p for p in found)
    for reserved in ("out", "error", "default"):
        found = problems("control.route", {"routes": {reserved: "true"}})
        assert any(f"port name {reserved!r} is reserved" in p for p in found)
    found = problems("control.route", {"routes": {"ok": "x >"}})
    assert any("config.routes.ok" in p and "invalid CEL" in p for p in found)
    found = problems("control.route", {"first_match": True})
    assert any("config.routes" in p for p in found)


def test_route_rejects_a_connection_to_an_undeclared_port() -> None:
    wf = (
        Workflow("r")
        .node("src", "source.values", values=[1])
        .node("r", "control.route", routes={"a": "true"})
        .node("out", "sink.collect")
        .connect("src -> r")
        .connect("r.b -> out")
    )
    with pytest.raises(WorkflowValidationError, match="no output port 'b'"):
        validate(wf, registry())


# --- split ---------------------------------------------------------------------------


@pytest.mark.parametrize("fuse", [True, False])
async def test_split_sends_each_key_to_one_port(fuse: bool) -> None:
    items = [{"user": f"u{i % 37}", "seq": i} for i in range(2000)]
    got = await run_nodes(
        control.split,
        {"in": items},
        {"n": 4, "key": "x.user"},
        registry=registry(),
        fuse=fuse,
    )
    assert set(got) >= {"p0", "p1", "p2", "p3"}
    owner: dict[str, str] = {}
    for port in ("p0", "p1", "p2", "p3"):
        assert got[port], f"{port} got nothing from 37 keys"
        for x in got[port]:
            assert owner.setdefault(x["user"], port) == port
        # Each port sees its items in input order.
        assert [x["seq"] for x in got[port]] == sorted(x["seq"] for x in got[port])
        for x in got[port]:
            assert port == f"p{control.split_port(x['user'], 4)}"
    assert sum(len(got[p]) for p in ("p0", "p1", "p2", "p3")) == len(items)


def test_split_hash_is_crc32_of_sorted_json() -> None:
    for key in ["ann", 7, [1, "a"], {"b": 1, "a": 2}, None, 1.5, 2**70]:
        data = msgspec.json.encode(key, order="sorted")
        assert control.split_port(key, 5) == zlib.crc32(data) % 5
    assert control.split_port({"a": 1, "b": 2}, 97) == control.split_port(
        {"b": 2, "a": 1}, 97
    )


def test_split_hash_is_the_same_in_another_process() -> None:
    keys = ["ann", "bob", 12, [1, 2], {"k": "v"}]
    here = [control.split_port(k, 8) for k in keys]
    code = (
        "from flowstream.nodes.control import split_port; "
        f"print([split_port(k, 8) for k in {keys!r}])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert done.stdout.strip() == str(here)


@settings(max_examples=50, deadline=None)
@given(
    keys=st.lists(st.text(max_size=5) | st.integers(-(2**63), 2**63 - 1), max_size=30),
    n=st.integers(1, 9),
)
def test_split_loses_nothing(keys: list[Any], n: int) -> None:
    items = [{"k": k, "i": i} for i, k in enumerate(keys)]
    got = run_virtual(
        run_nodes(
            control.split, {"in": items}, {"n": n, "key": "x.k"}, registry=registry()
        )
    )
    ports = [f"p{i}" for i in range(n)]
    assert sorted(x["i"] for p in ports for x in got[p]) == list(range(len(items)))
    for p in ports:
        assert {control.split_port(x["k"], n) for x in got[p]} <= {int(p[1:])}


def test_split_config_problems() -> None:
    assert any(
        "n must be between 1 and 1024, got 0" in p
        for p in problems("control.split", {"n": 0, "key": "x"})
    )
    assert any(
        "got 5000" in p for p in problems("control.split", {"n": 5000, "key": "x"})
    )
    found = problems("control.split", {"n": 2, "key": "x +"})
    assert any("config.key" in p and "invalid CEL" in p for p in found)
    found = problems("control.split", {"key": "x"})
    assert any("config.n" in p for p in found)


# --- merge_batches (the reader behind merge and the joins) ------------------------


async def batches_of(tag: str, count: int) -> AsyncIterator[list[Any]]:
    for i in range(count):
        yield [f"{tag}{i}"]


async def test_merge_batches_takes_turns_when_sources_are_always_ready() -> None:
    sources = [batches_of("a", 50), batches_of("b", 50), batches_of("c", 3)]
    got: list[tuple[int, Any]] = []
    async with contextlib.aclosing(control.merge_batches(sources)) as merged:
        async for index, batch in merged:
            got.append((index, batch))
    firsts = [i for i, batch in got[:9] if batch is not None]
    assert firsts == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert (2, None) in got
    assert [b for i, b in got if i == 0] == [[f"a{n}"] for n in range(50)] + [None]


async def test_merge_batches_serves_the_first_source_before_the_others() -> None:
    sources = [batches_of("a", 3), batches_of("t", 3)]
    got: list[Any] = []
    async with contextlib.aclosing(control.merge_batches(sources, first=1)) as merged:
        async for _, batch in merged:
            got.append(batch)
    assert got[:3] == [["t0"], ["t1"], ["t2"]]


async def test_merge_batches_closed_early_leaves_no_task_behind() -> None:
    closed: list[str] = []

    async def endless(tag: str) -> AsyncGenerator[list[Any], None]:
        try:
            while True:
                yield [tag]
                await asyncio.sleep(0)
        finally:
            closed.append(tag)

    before = asyncio.all_tasks()
    a, b = endless("a"), endless("b")
    merged = control.merge_batches([a, b])
    async with contextlib.aclosing(merged):
        async for _ in merged:
            break
    assert asyncio.all_tasks() == before
    await a.aclose()
    await b.aclose()
    assert sorted(closed) == ["a", "b"]


@node("test.one")
async def one() -> int:
    return 1


@node("test.two")
def two() -> int:
    return 2


async def test_zip_of_one_shot_nodes_is_called_directly() -> None:
    reg = registry()
    reg.register_all([one, two])
    wf = (
        Workflow("z")
        .node("a", "test.one")
        .node("b", "test.two")
        .node("z", "control.zip", inputs=["x", "y"], as_dict=True)
        .connect("a -> z.x")
        .connect("b -> z.y")
    )
    result = await run_workflow(wf, reg)
    assert result.ok, result.error
    assert result.output("z") == [{"x": 1, "y": 2}]
