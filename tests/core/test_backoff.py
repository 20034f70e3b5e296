from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from connectors._reconnect import Reconnect
from connectors.http import HttpSinkConfig
from flowstream import Backoff, FlowRuntime, RetryPolicy, Workflow, default_registry
from flowstream.errors import WorkflowValidationError

URL = "http://api.test/items"

# Every retrying config is a Backoff: the same fields, checked by one code.
USERS: list[tuple[type[Backoff], dict[str, Any]]] = [
    (Backoff, {}),
    (RetryPolicy, {}),
    (Reconnect, {}),
    (HttpSinkConfig, {"url": URL}),
]


@pytest.mark.parametrize(("kind", "base"), USERS)
@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("delay_ms", -1, "delay_ms must be a finite number >= 0, got -1"),
        ("delay_ms", math.nan, "delay_ms must be a finite number >= 0"),
        ("delay_ms", math.inf, "delay_ms must be a finite number >= 0"),
        ("backoff_multiplier", 0.5, "backoff_multiplier must be a finite number >= 1"),
        ("backoff_multiplier", math.inf, "backoff_multiplier must be"),
        ("max_delay_ms", -5, "max_delay_ms must be >= 0, got -5"),
        ("max_delay_ms", math.nan, "max_delay_ms must be >= 0"),
    ],
)
def test_every_backoff_is_checked_the_same_way(
    kind: type[Backoff], base: dict[str, Any], field: str, value: float, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        kind(**base, **{field: value})


@pytest.mark.parametrize(("kind", "base"), USERS)
def test_every_backoff_waits_the_same_way(
    kind: type[Backoff], base: dict[str, Any]
) -> None:
    extra = {"jitter": 0.0} if kind is Reconnect else {}
    policy = kind(
        **base, **extra, delay_ms=100, backoff_multiplier=10, max_delay_ms=5_000
    )
    assert [policy.delay_s(n) for n in (1, 2, 3, 4)] == [0.1, 1.0, 5.0, 5.0]
    # Past any float: the cap, never an OverflowError.
    assert policy.delay_s(100_000) == 5.0


def test_a_first_delay_above_the_cap_waits_the_cap() -> None:
    assert Backoff(delay_ms=500, max_delay_ms=100).delay_s(1) == 0.1
    assert Backoff(delay_ms=0, backoff_multiplier=3).delay_s(10_000) == 0.0


# --- http.sink's old spellings ------------------------------------------------


def test_http_sink_reads_the_old_field_names() -> None:
    old = msgspec.convert(
        {"url": URL, "backoff_ms": 5, "max_backoff_ms": 50}, HttpSinkConfig
    )
    new = msgspec.convert(
        {"url": URL, "delay_ms": 5, "max_delay_ms": 50}, HttpSinkConfig
    )
    assert old == new
    assert (old.delay_ms, old.max_delay_ms) == (5, 50)
    # The old fields are emptied: written back and read again, the config
    # holds the values under the new names only, and is the same.
    assert (old.backoff_ms, old.max_backoff_ms) == (None, None)
    assert msgspec.convert(msgspec.to_builtins(old), HttpSinkConfig) == old
    assert [old.delay_s(n) for n in (1, 2, 3, 4, 5)] == [
        0.005,
        0.01,
        0.02,
        0.04,
        0.05,
    ]


def test_http_sink_old_and_new_name_may_agree_but_not_differ() -> None:
    same = HttpSinkConfig(url=URL, backoff_ms=5, delay_ms=5)
    assert same.delay_ms == 5
    with pytest.raises(ValueError, match="backoff_ms is the old name of delay_ms"):
        HttpSinkConfig(url=URL, backoff_ms=5, delay_ms=7)


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"backoff_ms": -1}, "config.backoff_ms", "backoff_ms must be"),
        ({"max_backoff_ms": -1}, "config.max_backoff_ms", "max_backoff_ms must be"),
        ({"delay_ms": -1}, "config.delay_ms", "delay_ms must be"),
        ({"max_delay_ms": -1}, "config.max_delay_ms", "max_delay_ms must be"),
        (
            {"backoff_ms": 1, "delay_ms": 2},
            "config.backoff_ms",
            "old name of delay_ms",
        ),
    ],
)
def test_a_bad_backoff_names_the_field_as_written(
    config: dict[str, Any], field: str, words: str
) -> None:
    from connectors.http import http_sink

    registry = default_registry(entry_points=False)
    registry.register(http_sink)
    wf = (
        Workflow("bad")
        .node("src", "source.values", values=[])
        .node("h", "http.sink", {"url": URL, **config})
        .connect("src -> h")
    )
    with pytest.raises(WorkflowValidationError) as info:
        FlowRuntime(registry).validate(wf)
    (problem,) = info.value.problems
    assert (problem.node, problem.field) == ("h", field)
    assert words in problem.message
