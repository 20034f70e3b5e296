"""The Ray backend without a cluster: slots, the cut, what it accepts."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from ray import cloudpickle

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.workflow import Checkpoint, RetryWorkflow
from flowstream.runtime.ray import RayBackendError
from flowstream.runtime.ray.edges import Receive, Send, receive, send
from flowstream.runtime.ray.nodetypes import node_types
from flowstream.runtime.ray.slots import cut, remote_edges, slots_of
from flowstream.runtime.validation import validate

from .test_ray_backend import everything


def test_checkpoints_in_dag_mode_and_with_retries_are_accepted(tmp_path) -> None:
    wf = (
        Workflow("ck", checkpoint=Checkpoint(path=str(tmp_path / "c.db")))
        .node("src", "source.range", stop=3)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    FlowRuntime().executor(wf, backend="ray")  # DAG mode
    wf.error_handling = RetryWorkflow()
    FlowRuntime().executor(wf, backend="ray")
    FlowRuntime().executor(wf, backend="ray", mode="stream")
    # What is still refused: a credit window that admits nothing.
    with pytest.raises(RayBackendError, match="credit_window must be >= 1, got 0"):
        FlowRuntime().executor(wf, backend="ray", credit_window=0)


def test_a_node_type_made_in_a_function_travels_by_value_once() -> None:
    @node("slots.thrice")
    def thrice(x: int) -> int:
        return 3 * x

    registry = default_registry()
    registry.register(thrice)
    wf = (
        Workflow("mixed", parallelism=2)
        .node("src", "source.range", stop=3)
        .node("dbl", "slots.thrice")
        .node("per_key", "transform.reduce", op="count", key="x")
        .node("out", "sink.collect")
        .connect("src -> dbl")
        .connect("dbl -> per_key")
        .connect("per_key -> out")
    )
    types = node_types(validate(wf, registry), cloudpickle.dumps)
    assert types.by_value == {"slots.thrice": thrice}  # once, for both instances
    assert "transform.reduce" in types.by_reference


def test_a_node_type_that_cannot_be_sent_to_the_workers_is_named() -> None:
    lock = threading.Lock()

    @node("slots.locked")
    def locked(x: int) -> int:
        with lock:
            return x

    registry = default_registry()
    registry.register(locked)
    wf = (
        Workflow("locked", parallelism=2)
        .node("src", "source.range", stop=3)
        .node("l", "slots.locked")
        .node("out", "sink.collect")
        .connect("src -> l")
        .connect("l -> out")
    )
    with pytest.raises(
        RayBackendError,
        match=r"node type 'slots.locked' \(tests\.runtime\.ray\.test_slots\."
        r".*locked:\d+\) cannot be sent to the Ray workers: "
        r"TypeError: cannot pickle '_thread.lock' object",
    ):
        FlowRuntime(registry).executor(wf, backend="ray")


def test_slots_cut_every_cross_process_edge_into_a_send_and_a_receive() -> None:
    graph = validate(everything(2), default_registry())
    slots = slots_of(graph)
    assert max(slots.values()) == 1
    assert slots["per_user[1]"] == 1
    assert slots["ev"] == 0
    edges = remote_edges(graph, slots)
    made: dict[str, list[int]] = {"recv": [], "send": []}

    def receiver(i: int, conn: Any) -> Any:
        made["recv"].append(i)
        return receive, Receive(inbox=None)

    def sender(i: int, conn: Any) -> Any:
        made["send"].append(i)
        return send, Send(address=("", 0), token=b"", edge=i, window=1, meter=None)

    parts = [cut(graph, s, slots, edges, receiver, sender) for s in (0, 1)]
    assert sorted(made["recv"]) == sorted(made["send"]) == list(range(len(edges)))
    own = {gid for p in parts for gid, g in p.nodes.items() if not g.internal}
    assert own == {gid for gid, g in graph.nodes.items() if not g.internal}
    for part in parts:  # every connection stays inside its part
        for g in part.nodes.values():
            for c in g.inbound:
                assert c.from_node in part.nodes
