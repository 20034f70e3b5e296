"""The Ray backend without a cluster: slots, the cut, what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.core.workflow import Checkpoint, RetryWorkflow
from flowstream.runtime.ray import RayBackendError
from flowstream.runtime.ray.edges import Receive, Send, receive, send
from flowstream.runtime.ray.slots import cut, remote_edges, slots_of
from flowstream.runtime.validation import validate

from .test_ray_backend import everything


def test_what_the_ray_backend_cannot_do_yet_is_refused_by_name(tmp_path) -> None:
    wf = (
        Workflow("ck", checkpoint=Checkpoint(path=str(tmp_path / "c.db")))
        .node("src", "source.range", stop=3)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    with pytest.raises(
        RayBackendError,
        match="'ck': on the ray backend checkpoints are taken in "
        "stream mode only, not in 'dag' mode",
    ):
        FlowRuntime().executor(wf, backend="ray")
    FlowRuntime().executor(wf, backend="ray", mode="stream")  # accepted
    wf.error_handling = RetryWorkflow()
    with pytest.raises(RayBackendError, match=r"retry_workflow .* does not combine"):
        FlowRuntime().executor(wf, backend="ray", mode="stream")
    wf.checkpoint = None
    FlowRuntime().executor(wf, backend="ray")  # retries alone: accepted
    wf.error_handling = None
    with pytest.raises(RayBackendError, match="credit_window must be >= 1, got 0"):
        FlowRuntime().executor(wf, backend="ray", credit_window=0)


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
        return send, Send(target=None, edge=i, window=1, meter=None)

    parts = [cut(graph, s, slots, edges, receiver, sender) for s in (0, 1)]
    assert sorted(made["recv"]) == sorted(made["send"]) == list(range(len(edges)))
    own = {gid for p in parts for gid, g in p.nodes.items() if not g.internal}
    assert own == {gid for gid, g in graph.nodes.items() if not g.internal}
    for part in parts:  # every connection stays inside its part
        for g in part.nodes.values():
            for c in g.inbound:
                assert c.from_node in part.nodes
