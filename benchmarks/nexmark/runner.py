"""Run a Nexmark query's workflow on events: pre-decoded, or from a file.

Every query workflow (``examples/nexmark``) reads node ``events`` and collects
node ``result``. `prepare` swaps ``events`` for the input at hand:
``source.values`` over events already decoded (engine only) or the query's
own ``file.source`` (its declared variants) on a JSON Lines file (end to
end), and validates the graph;
`run` times the run alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from examples.nexmark.queries import QUERIES as PYTHON_QUERIES
from flowstream import FlowRuntime
from flowstream.core.workflow import Workflow, WorkflowNode
from flowstream.core.workflow_files import read_workflow

if TYPE_CHECKING:
    from flowstream.runtime.validation import Graph

__all__ = ["EXAMPLES", "FORMS", "QUERY_NAMES", "prepare", "run", "workflow"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "nexmark"
FORMS = ("cel", "python")
QUERY_NAMES = tuple(PYTHON_QUERIES)


def workflow(query: str, form: str) -> Workflow:
    """The query's workflow as shipped: ``qN.yaml`` (cel) or `queries.qN` (python).

    Raises:
        ValueError: Unknown query or form.
    """
    if query not in PYTHON_QUERIES:
        msg = f"unknown query {query!r}; pick one of {', '.join(QUERY_NAMES)}"
        raise ValueError(msg)
    if form == "cel":
        return read_workflow(EXAMPLES / f"{query}.yaml")
    if form == "python":
        return PYTHON_QUERIES[query]()
    msg = f"unknown form {form!r}; pick one of {', '.join(FORMS)}"
    raise ValueError(msg)


def _with_events(wf: Workflow, events: list[Any] | None, path: str | None) -> Workflow:
    if events is not None:
        source = WorkflowNode(
            id="events", type="source.values", config={"values": events}
        )
    else:
        # The query's own source config (its declared variants), on this file.
        (shipped,) = [n for n in wf.nodes if n.id == "events"]
        config = {**(shipped.config or {}), "path": path}
        source = WorkflowNode(id="events", type="file.source", config=config)
    nodes = [source if n.id == "events" else n for n in wf.nodes]
    return Workflow(name=wf.name, mode=wf.mode, nodes=nodes, connections=wf.connections)


def prepare(
    query: str,
    form: str,
    *,
    events: list[Any] | None = None,
    path: str | None = None,
    runtime: FlowRuntime | None = None,
) -> Graph:
    """Validate the query's workflow reading ``events`` (a list) or ``path``.

    Raises:
        WorkflowValidationError: The workflow is invalid.
    """
    if (events is None) == (path is None):
        msg = "give either events (decoded) or path (a JSON Lines file)"
        raise ValueError(msg)
    runtime = runtime or FlowRuntime()
    return runtime.validate(_with_events(workflow(query, form), events, path))


def run(graph: Graph, runtime: FlowRuntime | None = None) -> tuple[list[Any], float]:
    """Run a prepared query; return its records and the run's CPU time (s).

    CPU time of this process, not wall time: the engine runs on one thread,
    so this is what the run takes on a core of its own, even on a machine
    shared with other work (wall time is what the caller can measure around).

    Raises:
        RuntimeError: The run did not complete, or something went to the dead
            letters (every Nexmark event is valid, so that is a bug).
    """
    runtime = runtime or FlowRuntime()
    started = time.process_time()
    result = runtime.run(graph)
    elapsed = time.process_time() - started
    if not result.ok:
        msg = f"{graph.workflow.name}: run {result.status}: {result.error}"
        raise RuntimeError(msg)
    if result.dead_letters:
        first = result.dead_letters[0]
        msg = (
            f"{graph.workflow.name}: {len(result.dead_letters)} dead letters, "
            f"the first from node {first.node_id!r}: {first.reason}"
        )
        raise RuntimeError(msg)
    return result.output("result"), elapsed
