from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

import msgspec
import pytest

from flowstream.core.node import ERROR_PORT, OUT_PORT, Node, NodeContext, NodeSpec, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Scale(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    factor: float = 2.0


class Needs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    size: int
    label: str = "x"


async def aiter_of(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def collect(gen: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in gen]


def location_of(fn: Any) -> str:
    return f"{fn.__module__}.{fn.__qualname__}:{fn.__code__.co_firstlineno}"


# --- async generators ---------------------------------------------------------


@node("transform.scale", config=Scale)
async def scale(inp: AsyncIterator[float], *, config: Scale) -> AsyncIterator[float]:
    """Multiply each item by the factor.

    More text that is not part of the description.
    """
    async for x in inp:
        yield x * config.factor


@node("test.annotated")
async def annotated(inp: AsyncIterator[int], *, config: Needs) -> AsyncIterator[int]:
    async for x in inp:
        yield x + config.size


@node("test.zip", outputs=["even", "odd", ERROR_PORT, "even"])
async def zipper(
    left: AsyncIterator[int], right: AsyncIterator[int], *, ctx: NodeContext
) -> AsyncIterator[int]:
    async for x in left:
        yield x
    async for y in right:
        yield y


def test_async_generator_spec() -> None:
    assert isinstance(scale, NodeSpec)
    assert scale.type_id == "transform.scale"
    assert scale.shape == "stream"
    assert scale.is_async
    assert not scale.is_class
    assert scale.inputs == ("in",)
    assert scale.params == ("inp",)
    assert scale.outputs == (OUT_PORT, ERROR_PORT) == ("out", "error")
    assert scale.config_type is Scale
    assert scale.wants_config
    assert not scale.wants_ctx
    assert not scale.is_source
    assert scale.description == "Multiply each item by the factor."
    assert re.fullmatch(r"tests\.core\.test_node\.scale:\d+", scale.location)


def test_config_type_from_annotation() -> None:
    assert annotated.config_type is Needs
    assert annotated.wants_config


def test_other_parameter_names_are_their_own_ports() -> None:
    assert zipper.inputs == ("left", "right")
    assert zipper.params == ("left", "right")
    assert zipper.wants_ctx
    assert not zipper.wants_config
    assert zipper.config_type is None
    # out and error come first, extra ports follow once each.
    assert zipper.outputs == ("out", "error", "even", "odd")


def test_inp_maps_to_in_and_other_names_stay() -> None:
    @node("test.two")
    async def two(
        inp: AsyncIterator[int], in_: AsyncIterator[int]
    ) -> AsyncIterator[int]:
        yield 1

    assert two.inputs == ("in", "in_")
    assert two.params == ("inp", "in_")


def test_positional_only_parameters_are_ports() -> None:
    @node("test.posonly")
    async def posonly(
        inp: AsyncIterator[int], /, side: AsyncIterator[int]
    ) -> AsyncIterator[int]:
        yield 1

    assert posonly.inputs == ("in", "side")


def test_source_has_no_inputs() -> None:
    @node("test.source", config=Scale)
    async def source(*, config: Scale, ctx: NodeContext) -> AsyncIterator[float]:
        yield config.factor

    assert source.inputs == ()
    assert source.is_source
    assert source.wants_config
    assert source.wants_ctx


async def test_spec_fn_is_the_raw_function() -> None:
    assert scale.fn.__name__ == "scale"
    out = await collect(scale.fn(aiter_of([1, 2, 3]), config=Scale(factor=3)))
    assert out == [3, 6, 9]
    out = await collect(annotated.fn(aiter_of([1]), config=Needs(size=10)))
    assert out == [11]


def test_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        scale.type_id = "other.id"  # type: ignore[misc]


def test_description_override_and_missing_docstring() -> None:
    @node("test.desc", description="Given text.")
    async def documented(inp: AsyncIterator[int]) -> AsyncIterator[int]:
        """Docstring text."""
        yield 1

    @node("test.nodoc")
    async def undocumented(inp: AsyncIterator[int]) -> AsyncIterator[int]:
        yield 1

    assert documented.description == "Given text."
    assert undocumented.description == ""


def test_flags_are_kept() -> None:
    def kernel(config: Any) -> Any:
        return lambda batch: batch

    @node("test.flags", batched=True, kernel=kernel, needs_end=True)
    async def flags(inp: AsyncIterator[list[int]]) -> AsyncIterator[list[int]]:
        yield []

    assert flags.batched
    assert flags.kernel is kernel
    assert flags.needs_end


# --- one-shot functions -------------------------------------------------------


@node("test.add")
async def add(a: int, b: int) -> int:
    return a + b


@node("test.upper")
def upper(inp: str) -> str:
    return inp.upper()


async def test_coroutine_is_a_call_node() -> None:
    assert add.shape == "call"
    assert add.is_async
    assert add.inputs == ("a", "b")
    assert add.outputs == ("out", "error")
    assert await add.fn(2, 3) == 5


def test_plain_def_is_a_sync_call_node() -> None:
    assert upper.shape == "call"
    assert not upper.is_async
    assert upper.inputs == ("in",)
    assert upper.fn("abc") == "ABC"


def test_call_node_with_config() -> None:
    @node("test.mul")
    def mul(inp: float, *, config: Scale) -> float:
        return inp * config.factor

    assert mul.config_type is Scale
    assert mul.fn(2, config=Scale(factor=4)) == 8


# --- classes ------------------------------------------------------------------


@node("test.counter", config=Scale)
class Counter:
    """Count and scale."""

    def __init__(self, config: Scale) -> None:
        self.config = config
        self.log: list[str] = []

    async def initialize(self, ctx: NodeContext) -> None:
        self.log.append("init")

    async def execute(self, inp: AsyncIterator[float]) -> AsyncIterator[float]:
        async for x in inp:
            yield x * self.config.factor

    async def shutdown(self) -> None:
        self.log.append("shutdown")


# A class decorator does not change a class's static type, so tests cast.
counter = cast("NodeSpec", Counter)


async def test_class_node() -> None:
    assert isinstance(counter, NodeSpec)
    assert counter.is_class
    assert counter.shape == "stream"
    assert counter.inputs == ("in",)
    assert counter.config_type is Scale
    assert counter.wants_config
    assert counter.description == "Count and scale."
    instance = counter.create(Scale(factor=10))
    assert isinstance(instance, Node)
    assert isinstance(instance, counter.fn)
    assert instance.config == Scale(factor=10)
    await instance.initialize(cast("NodeContext", None))
    out = await collect(instance.execute(aiter_of([1, 2])))
    await instance.shutdown()
    assert out == [10, 20]
    assert instance.log == ["init", "shutdown"]


async def test_class_node_without_config_or_lifecycle() -> None:
    class Plain:
        async def execute(self, a: int, b: int) -> int:
            return a * b

    plain = node("test.plain")(Plain)
    assert plain.shape == "call"
    assert plain.is_async
    assert plain.inputs == ("a", "b")
    assert not plain.wants_config
    assert plain.config_type is None
    assert await plain.create(None).execute(3, 4) == 12  # type: ignore[attr-defined]


def test_class_config_type_is_checked() -> None:
    class Configured:
        def __init__(self, config: int) -> None:
            self.config = config

        async def execute(self, inp: AsyncIterator[int]) -> AsyncIterator[int]:
            yield 1

    with pytest.raises(TypeError, match=r"config must be a msgspec\.Struct type"):
        node("test.cfg", config=int)(Configured)  # type: ignore[arg-type]


async def test_function_node_instances_follow_the_protocol() -> None:
    instance = scale.create(Scale())
    assert isinstance(instance, Node)
    assert instance.execute is scale.fn  # type: ignore[attr-defined]
    await instance.initialize(cast("NodeContext", None))
    await instance.shutdown()


# --- decoration errors name the function and its line -------------------------


async def _varargs(inp: AsyncIterator[int], *args: Any) -> AsyncIterator[int]:
    yield 1


async def _kwargs(inp: AsyncIterator[int], **kw: Any) -> AsyncIterator[int]:
    yield 1


async def _other_keyword(inp: AsyncIterator[int], *, limit: int) -> AsyncIterator[int]:
    yield 1


async def _untyped_config(inp: AsyncIterator[int], *, config) -> AsyncIterator[int]:
    yield 1


async def _not_a_struct_config(
    inp: AsyncIterator[int], *, config: int
) -> AsyncIterator[int]:
    yield 1


def _one_shot(inp: int) -> int:
    return inp


async def _fine(inp: AsyncIterator[int]) -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("fn", "kwargs", "error", "pattern"),
    [
        (_varargs, {}, TypeError, "parameter 'args' is not supported"),
        (_kwargs, {}, TypeError, "parameter 'kw' is not supported"),
        (_other_keyword, {}, TypeError, "parameter 'limit' is not supported"),
        (_untyped_config, {}, TypeError, "takes 'config' but its type is unknown"),
        (_not_a_struct_config, {}, TypeError, "type is unknown"),
        (_fine, {"config": int}, TypeError, "config must be a msgspec.Struct type"),
        (_one_shot, {"batched": True}, TypeError, "batched needs an async generator"),
    ],
)
def test_decoration_errors_name_function_and_line(
    fn: Any, kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error) as info:
        node("test.bad", **kwargs)(fn)
    message = str(info.value)
    assert re.search(pattern, message), message
    assert f"node 'test.bad' ({location_of(fn)})" in message


@pytest.mark.parametrize("type_id", ["nodot", ".verb", "category.", ""])
def test_bad_type_id_names_function_and_line(type_id: str) -> None:
    with pytest.raises(ValueError, match=r"must be 'category\.verb'") as info:
        node(type_id)(_fine)
    assert location_of(_fine) in str(info.value)
    assert repr(type_id) in str(info.value)


def test_class_without_execute() -> None:
    class Empty:
        pass

    with pytest.raises(TypeError, match="a node class needs an execute method") as info:
        node("test.empty")(Empty)
    assert "test_class_without_execute.<locals>.Empty" in str(info.value)


def test_class_taking_config_needs_its_type() -> None:
    class Configured:
        def __init__(self, config: Scale) -> None:
            self.config = config

        async def execute(self, inp: AsyncIterator[int]) -> AsyncIterator[int]:
            yield 1

    with pytest.raises(TypeError, match="__init__ takes a config; pass config="):
        node("test.cfg")(Configured)


def test_two_parameters_for_port_in() -> None:
    async def clash(inp: AsyncIterator[int], /, **kw: Any) -> AsyncIterator[int]:
        yield 1

    # 'in' itself cannot be a parameter name, so the only clash is with **kw,
    # which is refused on its own.
    with pytest.raises(TypeError, match="not supported"):
        node("test.clash")(clash)


# --- config -------------------------------------------------------------------


def test_decode_config_validates() -> None:
    assert scale.decode_config({}) == Scale()
    assert scale.decode_config({"factor": 3}) == Scale(factor=3.0)
    assert annotated.decode_config({"size": 1}) == Needs(size=1)


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ({"factr": 3}, r"unknown field `factr`"),
        ({"factor": "3"}, r"Expected `float`, got `str` - at `\$.factor`"),
        ({"factor": None}, r"Expected `float`, got `null`"),
    ],
)
def test_decode_config_rejects_bad_config(raw: dict[str, Any], pattern: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=pattern):
        scale.decode_config(raw)


def test_decode_config_missing_required_field() -> None:
    with pytest.raises(msgspec.ValidationError, match="missing required field `size`"):
        annotated.decode_config({"label": "y"})


def test_node_without_config_type_takes_no_config() -> None:
    assert upper.decode_config({}) is None
    with pytest.raises(msgspec.ValidationError, match="takes no config, got a, b"):
        upper.decode_config({"b": 1, "a": 2})
