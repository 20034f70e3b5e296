from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from flowstream import default_registry
from flowstream.core.node import NodeSpec, node
from flowstream.errors import UnknownNodeType
from flowstream.nodes import BUILTIN_NODES
from flowstream.runtime import registry as registry_module
from flowstream.runtime.registry import ENTRY_POINT_GROUP, NodeRegistry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

BUILTIN_IDS = {
    "source.values",
    "source.range",
    "transform.map",
    "transform.filter",
    "sink.collect",
    "sink.null",
}


def make_spec(type_id: str) -> NodeSpec:
    async def passthrough(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for x in inp:
            yield x

    return node(type_id)(passthrough)


class FakeEntryPoint:
    """Quacks like importlib.metadata.EntryPoint: name, value and load()."""

    def __init__(self, name: str, loaded: Any = None, error: Exception | None = None):
        self.name = name
        self.value = f"fake_pack.{name}:thing"
        self._loaded = loaded
        self._error = error

    def load(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._loaded


@pytest.fixture
def fake_entry_points(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[list[FakeEntryPoint]], list[str]]:
    """Install fake entry points; returns the list of groups asked for."""
    groups: list[str] = []

    def install(eps: list[FakeEntryPoint]) -> list[str]:
        def entry_points(*, group: str) -> list[FakeEntryPoint]:
            groups.append(group)
            return eps if group == ENTRY_POINT_GROUP else []

        monkeypatch.setattr(registry_module, "entry_points", entry_points)
        return groups

    return install


# --- lookup -------------------------------------------------------------------------


def test_default_contains_the_builtins() -> None:
    registry = default_registry(entry_points=False)
    ids = {spec.type_id for spec in registry}
    assert ids >= BUILTIN_IDS
    assert ids == {spec.type_id for spec in BUILTIN_NODES}
    assert len(registry) == len(BUILTIN_NODES)
    for type_id in BUILTIN_IDS:
        assert type_id in registry
        assert registry.get(type_id).type_id == type_id


def test_iteration_is_sorted_by_id() -> None:
    ids = [spec.type_id for spec in default_registry(entry_points=False)]
    assert ids == sorted(ids)


def test_each_default_registry_is_a_fresh_object() -> None:
    first = default_registry(entry_points=False)
    first.register(make_spec("extra.thing"))
    assert "extra.thing" not in default_registry(entry_points=False)


@pytest.mark.parametrize(
    ("asked", "suggested"),
    [
        ("transform.mapp", "transform.map"),
        ("transfrom.map", "transform.map"),
        ("map", "transform.map"),
        ("filter", "transform.filter"),
        ("source.rnage", "source.range"),
        ("other.collect", "sink.collect"),
    ],
)
def test_unknown_type_suggests_close_ids(asked: str, suggested: str) -> None:
    registry = default_registry(entry_points=False)
    with pytest.raises(UnknownNodeType) as info:
        registry.get(asked)
    exc = info.value
    assert exc.type_id == asked
    assert exc.suggestions[0] == suggested
    assert str(exc).startswith(f"unknown node type {asked!r} (did you mean")
    assert repr(suggested) in str(exc)
    assert isinstance(exc, LookupError)


def test_unknown_type_without_anything_close() -> None:
    with pytest.raises(UnknownNodeType) as info:
        default_registry(entry_points=False).get("zzzz.qqqq")
    assert info.value.suggestions == []
    assert str(info.value) == "unknown node type 'zzzz.qqqq'"


def test_suggest_limit() -> None:
    registry = NodeRegistry([make_spec(f"a.item{i}") for i in range(6)])
    assert len(registry.suggest("a.item", limit=2)) == 2


# --- registration -------------------------------------------------------------------


def test_duplicate_registration_raises_unless_replaced() -> None:
    first, second = make_spec("pack.thing"), make_spec("pack.thing")
    registry = NodeRegistry([first])
    with pytest.raises(
        ValueError, match=r"'pack\.thing' is already registered by"
    ) as info:
        registry.register(second)
    assert "replace=True" in str(info.value)
    assert registry.get("pack.thing") is first
    assert registry.register(second, replace=True) is second
    assert registry.get("pack.thing") is second


def test_registering_the_same_spec_twice_is_harmless() -> None:
    spec = make_spec("pack.same")
    registry = NodeRegistry([spec])
    registry.register(spec)
    assert len(registry) == 1


def test_register_refuses_what_is_not_a_spec() -> None:
    async def raw(inp: AsyncIterator[Any]) -> AsyncIterator[Any]:
        yield None

    with pytest.raises(TypeError, match="expected a NodeSpec"):
        NodeRegistry().register(raw)  # type: ignore[arg-type]


def test_default_builtin_clash_is_an_error() -> None:
    registry = default_registry(entry_points=False)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(make_spec("transform.map"))


# --- entry points -------------------------------------------------------------------


def test_entry_points_of_every_form_are_loaded(
    fake_entry_points: Callable[[list[FakeEntryPoint]], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    single = make_spec("pack.single")
    several = [make_spec("pack.one"), make_spec("pack.two")]
    by_function = make_spec("pack.registered")

    def register(registry: NodeRegistry) -> None:
        registry.register(by_function)

    groups = fake_entry_points(
        [
            FakeEntryPoint("single", single),
            FakeEntryPoint("broken", error=ImportError("no module named fake_pack")),
            FakeEntryPoint("several", several),
            FakeEntryPoint("tuple", (make_spec("pack.three"),)),
            FakeEntryPoint("function", register),
        ]
    )
    with caplog.at_level(logging.ERROR, logger="flowstream.registry"):
        registry = default_registry()

    assert groups == ["flowstream.nodes"]
    assert registry.get("pack.single") is single
    assert registry.get("pack.one") is several[0]
    assert registry.get("pack.two") is several[1]
    assert "pack.three" in registry
    assert registry.get("pack.registered") is by_function
    assert {s.type_id for s in registry} >= BUILTIN_IDS
    # The broken pack is logged, with its name and value, and skipped.
    [record] = caplog.records
    assert "cannot load node pack 'broken' (fake_pack.broken:thing)" in record.message
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ImportError)


def test_a_pack_whose_register_fails_does_not_stop_the_others(
    fake_entry_points: Callable[[list[FakeEntryPoint]], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def register(registry: NodeRegistry) -> None:
        msg = "pack bug"
        raise RuntimeError(msg)

    fake_entry_points(
        [
            FakeEntryPoint("bad", register),
            FakeEntryPoint("not iterable", 42),
            FakeEntryPoint("good", make_spec("pack.good")),
        ]
    )
    with caplog.at_level(logging.ERROR, logger="flowstream.registry"):
        registry = default_registry()
    assert "pack.good" in registry
    assert [r.message.split(" (")[0] for r in caplog.records] == [
        "cannot load node pack 'bad'",
        "cannot load node pack 'not iterable'",
    ]


def test_default_without_entry_points_does_not_look(
    fake_entry_points: Callable[[list[FakeEntryPoint]], list[str]],
) -> None:
    groups = fake_entry_points([FakeEntryPoint("single", make_spec("pack.single"))])
    registry = default_registry(entry_points=False)
    assert groups == []
    assert "pack.single" not in registry


def test_load_entry_points_of_another_group(
    fake_entry_points: Callable[[list[FakeEntryPoint]], list[str]],
) -> None:
    groups = fake_entry_points([FakeEntryPoint("single", make_spec("pack.single"))])
    registry = NodeRegistry()
    registry.load_entry_points("other.group")
    assert groups == ["other.group"]
    assert len(registry) == 0


def test_the_old_default_name_says_where_the_default_moved() -> None:
    with pytest.raises(AttributeError, match=r"flowstream\.default_registry"):
        NodeRegistry.default(entry_points=False)
