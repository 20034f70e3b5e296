from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, strategies as st

from flowstream.core.events import (
    EVENT_TYPES,
    ExecutionEvent,
    NodeCompleted,
    NodeEvent,
    NodeFailed,
    NodeStarted,
    NodeStats,
    RouteTaken,
    RunRestarted,
    WorkflowCompleted,
    WorkflowStarted,
    decode_event,
    encode_event,
)
from flowstream.errors import CodecError, DecodeError, EncodeError

# JSON has no NaN or infinity, so only finite floats can round-trip.
finite = st.floats(allow_nan=False, allow_infinity=False)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
counts = st.integers(min_value=0, max_value=2**63 - 1)
text = st.text()

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | ints | finite | text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=12,
)

stats = st.builds(
    NodeStats,
    items_in=counts,
    items_out=counts,
    errors=counts,
    dead_letters=counts,
    duration_s=finite,
)

events: st.SearchStrategy[ExecutionEvent] = st.one_of(
    st.builds(
        WorkflowStarted,
        run_id=text,
        timestamp=finite,
        workflow=text,
        mode=st.sampled_from(["dag", "stream", "routed"]),
        nodes=counts,
    ),
    st.builds(
        NodeStarted,
        run_id=text,
        timestamp=finite,
        node_id=text,
        node_type=text,
        attempt=ints,
    ),
    st.builds(
        NodeCompleted,
        run_id=text,
        timestamp=finite,
        node_id=text,
        node_type=text,
        stats=stats,
    ),
    st.builds(
        NodeFailed,
        run_id=text,
        timestamp=finite,
        node_id=text,
        node_type=text,
        error=text,
        error_type=text,
        attempt=ints,
        will_retry=st.booleans(),
    ),
    st.builds(
        RouteTaken,
        run_id=text,
        timestamp=finite,
        from_node=text,
        to_node=text,
        action=st.sampled_from(["simple", "parameterized", "conditional", "error"]),
        step=counts,
    ),
    st.builds(
        NodeEvent,
        run_id=text,
        timestamp=finite,
        node_id=text,
        name=text,
        data=json_values,
    ),
    st.builds(
        WorkflowCompleted,
        run_id=text,
        timestamp=finite,
        status=st.sampled_from(["completed", "failed", "cancelled"]),
        duration_s=finite,
        error=st.none() | text,
    ),
    st.builds(
        RunRestarted,
        run_id=text,
        timestamp=finite,
        attempt=ints,
        reason=text,
        delay_s=finite,
        max_attempts=st.none() | counts,
        checkpointed=st.booleans(),
        from_epoch=st.none() | counts,
    ),
)


@given(events)
def test_every_event_round_trips(event: ExecutionEvent) -> None:
    data = encode_event(event)
    assert decode_event(data) == event
    assert decode_event(data.decode()) == event


@given(events)
def test_tag_is_the_class_name_and_comes_first(event: ExecutionEvent) -> None:
    obj = json.loads(encode_event(event))
    assert obj["event"] == type(event).__name__
    assert next(iter(obj)) == "event"
    assert obj["run_id"] == event.run_id


def test_event_types_lists_the_eight_events() -> None:
    names = [cls.__name__ for cls in EVENT_TYPES]
    assert names == [
        "WorkflowStarted",
        "NodeStarted",
        "NodeCompleted",
        "NodeFailed",
        "RouteTaken",
        "NodeEvent",
        "WorkflowCompleted",
        "RunRestarted",
    ]
    for cls in EVENT_TYPES:
        assert cls.__struct_config__.tag == cls.__name__
        assert cls.__struct_config__.tag_field == "event"
        assert cls.__struct_config__.frozen


def test_defaults_are_omitted_and_restored() -> None:
    event = NodeFailed(
        run_id="r1",
        timestamp=1.5,
        node_id="fetch",
        node_type="http.request",
        error="boom",
        error_type="RuntimeError",
    )
    data = encode_event(event)
    assert json.loads(data) == {
        "event": "NodeFailed",
        "run_id": "r1",
        "timestamp": 1.5,
        "node_id": "fetch",
        "node_type": "http.request",
        "error": "boom",
        "error_type": "RuntimeError",
    }
    decoded = decode_event(data)
    assert isinstance(decoded, NodeFailed)
    assert decoded.attempt == 1
    assert decoded.will_retry is False


def test_node_completed_nests_stats() -> None:
    event = NodeCompleted(
        run_id="r",
        timestamp=2.0,
        node_id="a",
        node_type="transform.map",
        stats=NodeStats(items_in=3, items_out=2, dead_letters=1, duration_s=0.25),
    )
    assert json.loads(encode_event(event))["stats"] == {
        "items_in": 3,
        "items_out": 2,
        "dead_letters": 1,
        "duration_s": 0.25,
    }


def test_events_are_frozen_and_keyword_only() -> None:
    event = NodeStarted(run_id="r", timestamp=0.0, node_id="n", node_type="t")
    with pytest.raises(AttributeError):
        event.attempt = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        NodeStarted("r", 0.0, "n", "t")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            b'{"event": "NodeStarted", "run_id": 1, "timestamp": 0.0,'
            b' "node_id": "n", "node_type": "t"}',
            "`$.run_id`",
        ),
        (
            b'{"event": "NodeCompleted", "run_id": "r", "timestamp": 0.0,'
            b' "node_id": "n", "node_type": "t", "stats": {"items_in": "3"}}',
            "`$.stats.items_in`",
        ),
        (b'{"event": "NodeExploded", "run_id": "r"}', "`$.event`"),
        (b'{"run_id": "r"}', "missing required field `event`"),
        (
            b'{"event": "WorkflowStarted", "run_id": "r", "timestamp": 0.0}',
            "missing required field `workflow`",
        ),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b'{"event": "NodeStarted"', "truncated"),
        ("not json", "malformed"),
    ],
)
def test_bad_input_raises_decode_error_with_path(
    data: bytes | str, fragment: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(data)
    assert fragment in str(info.value)
    assert str(info.value).startswith("invalid event: ")
    assert isinstance(info.value.__cause__, msgspec.DecodeError)
    # Callers may catch it generically.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CodecError)


def test_unencodable_node_event_data_raises_encode_error() -> None:
    event = NodeEvent(run_id="r", timestamp=0.0, node_id="n", name="x", data=object())
    with pytest.raises(EncodeError, match="cannot encode NodeEvent event") as info:
        encode_event(event)
    assert isinstance(info.value.__cause__, TypeError)
