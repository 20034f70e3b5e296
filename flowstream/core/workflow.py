"""The workflow model: nodes, connections, routes, failure policies, a builder.

A `Workflow` is plain data (msgspec structs). It is read from and written to
JSON, YAML or TOML (chosen by extension), and built in Python with a fluent
builder::

    wf = (
        Workflow("demo")
        .node("numbers", "source.range", stop=10)
        .node("double", "transform.map", expr="x * 2")
        .node("out", "sink.collect")
        .connect("numbers -> double")
        .connect("double", "out")
    )

Connections are written either as records or as strings: ``"a -> b"`` means
``a.out -> b.in``; ports are named with a dot, ``"route.even -> sink.in"``.

A workflow in ``routed`` mode is a routed flow (`flowstream.routed`): its nodes
are steps, and instead of connections it has ``routes`` (``"a -> b"``: after
step ``a``, step ``b`` may run), an ``entry`` step (the first node if unset), a
``max_steps`` guard, and per node a ``retry`` policy and an ``on_error`` route.

Documents (reading, writing, making live callables portable) are in
`flowstream.core.workflow_files`; their functions are still importable from
here. What needs the node registry (types, ports, configs, cycles) is
checked by `flowstream.runtime.validation`.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .live import live, live_config
from .policies import (
    Checkpoint as Checkpoint,
    ContinueOnError as ContinueOnError,
    ErrorHandling as ErrorHandling,
    RetryPolicy as RetryPolicy,
    RetryWorkflow as RetryWorkflow,
    StopWorkflow as StopWorkflow,
)

if TYPE_CHECKING:
    from .node import NodeSpec
    from .workflow_files import (
        FN_FIELDS as FN_FIELDS,
        describe_validation_error as describe_validation_error,
        dump_workflow as dump_workflow,
        load_workflow as load_workflow,
        parse_workflow as parse_workflow,
        portable as portable,
        read_workflow as read_workflow,
        write_workflow as write_workflow,
    )

__all__ = [
    "Checkpoint",
    "Connection",
    "ContinueOnError",
    "ErrorHandling",
    "MAX_PARALLELISM",
    "RetryPolicy",
    "RetryWorkflow",
    "Route",
    "StopWorkflow",
    "Workflow",
    "WorkflowNode",
    "describe_validation_error",
    "dump_workflow",
    "load_workflow",
    "parse_connection",
    "parse_route",
    "portable",
    "read_workflow",
    "write_workflow",
]

Mode = Literal["dag", "stream", "routed"]
NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAX_PARALLELISM = 128
"""The most instances of one node: keys hash into this many key groups, and
each instance owns a contiguous range of them (so state moves by group when
the parallelism changes)."""


class WorkflowNode(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """One node of a workflow: an id, a registered type and its config."""

    id: str
    type: str
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    retry: RetryPolicy | None = None
    error_handling: ErrorHandling | None = None
    fuse: bool = True
    """False keeps this node out of fused chains (its own task and channels)."""
    on_error: str | None = None
    """In routed mode, the step to go to when this one fails (after its retries)."""
    concurrency: int = 1
    """For one-shot async nodes fed by a stream, the calls in flight at once."""
    ordered: bool = True
    """With ``concurrency`` > 1: emit results in input order (else as done)."""
    timeout_ms: float | None = None
    """For one-shot nodes, the time one call may take; a call over it fails its
    item (`flowstream.errors.TimeLimitExceeded`). An ``async def`` is
    cancelled at the limit; a plain ``def`` cannot be interrupted in-process,
    so its result is discarded once it returns late."""
    parallelism: int | None = None
    """The number of instances of this node that run side by side; None
    means the workflow's ``parallelism``. Keyed nodes split their keys
    between them, stateless ones share the items (docs/scale-out.md)."""

    def __post_init__(self) -> None:
        par = self.parallelism
        if par is not None and not 1 <= par <= MAX_PARALLELISM:
            msg = (
                f"parallelism must be between 1 and {MAX_PARALLELISM}, "
                f"got {self.parallelism}"
            )
            raise ValueError(msg)
        if self.concurrency < 1:
            msg = f"concurrency must be >= 1, got {self.concurrency}"
            raise ValueError(msg)
        if self.timeout_ms is not None and not (0 < self.timeout_ms < math.inf):
            msg = f"timeout_ms must be a finite number > 0, got {self.timeout_ms}"
            raise ValueError(msg)


class Connection(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """An edge from one node's output port to another node's input port."""

    from_node: str
    to_node: str
    from_port: str = "out"
    to_port: str = "in"
    capacity: int | None = None
    """Channel capacity in batches; None means the runtime's default."""

    def __str__(self) -> str:
        return f"{self.from_node}.{self.from_port} -> {self.to_node}.{self.to_port}"


class Route(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Routed mode: after step ``from_node``, step ``to_node`` may run."""

    from_node: str
    to_node: str

    def __str__(self) -> str:
        return f"{self.from_node} -> {self.to_node}"


class Workflow(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A graph of nodes joined by connections; plain data, runs nothing.

    Attributes:
        name: The workflow's name.
        mode: ``"dag"`` (finite; the run returns outputs), ``"stream"``
            (unbounded; runs until stopped) or ``"routed"`` (a routed flow of
            steps, see `flowstream.routed`).
        nodes: The nodes, in any order.
        connections: The edges (dag and stream modes).
        routes: Routed mode: which step may follow which.
        entry: Routed mode: the first step; None means the first node.
        max_steps: Routed mode: how many steps a run may take; None means
            the routed runtime's default.
        error_handling: The default policy for nodes that set none.
        checkpoint: Where a run keeps checkpoints, to resume after a crash.
        memory_budget_mb: How far the process's resident memory may grow
            during a run before the run is stopped (`MemoryBudgetExceeded`);
            read between batches (`flowstream.runtime.budget` says what that
            can and cannot catch).
        parallelism: The default ``parallelism`` of the nodes that can run
            several instances (keyed or stateless ones); the others (sources,
            global aggregates, file sinks) keep one unless they set their own,
            which validation then explains.
        description: Free text.
    """

    name: str
    mode: Mode = "dag"
    description: str = ""
    entry: str | None = None
    max_steps: int | None = None
    nodes: list[WorkflowNode] = msgspec.field(default_factory=list)
    connections: list[Connection] = msgspec.field(default_factory=list)
    routes: list[Route] = msgspec.field(default_factory=list)
    error_handling: ErrorHandling | None = None
    """None means `StopWorkflow` (and keeps files free of the default)."""
    checkpoint: Checkpoint | None = None
    """Resume a killed run from this store (`flowstream.runtime.checkpointing`)."""
    memory_budget_mb: float | None = None
    parallelism: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.parallelism <= MAX_PARALLELISM:
            msg = (
                f"parallelism must be between 1 and {MAX_PARALLELISM}, "
                f"got {self.parallelism}"
            )
            raise ValueError(msg)
        budget = self.memory_budget_mb
        if budget is not None and not (0 < budget < math.inf):
            msg = f"memory_budget_mb must be a finite number > 0, got {budget}"
            raise ValueError(msg)

    # --- builder -------------------------------------------------------------

    def node(
        self,
        id: str,
        type: str | NodeSpec,
        config: dict[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        error_handling: ErrorHandling | None = None,
        fuse: bool = True,
        on_error: str | None = None,
        concurrency: int = 1,
        ordered: bool = True,
        timeout_ms: float | None = None,
        parallelism: int | None = None,
        **options: Any,
    ) -> Workflow:
        """Add a node and return the workflow; ``options`` extend ``config``.

        ``type`` may be a `NodeSpec` (a function decorated with ``@node``),
        which then needs no registry. Config values that are callables
        (functions, lambdas, ``functools.partial``...) stand for themselves in
        any expression or function field (``fn=``, ``key=``, ``timestamp=``,
        route predicates...): see `flowstream.core.live`.
        """
        if config is None and not options:
            merged: dict[str, Any] = {}
        else:
            merged = live_config({**(config or {}), **options})
        if (
            retry is None
            and error_handling is None
            and fuse
            and on_error is None
            and concurrency == 1
            and ordered
            and timeout_ms is None
            and parallelism is None
        ):  # every setting at its default (most nodes): the short call
            self.nodes.append(WorkflowNode(id=id, type=live(type), config=merged))
            return self
        self.nodes.append(
            WorkflowNode(
                id=id,
                type=live(type),
                config=merged,
                retry=retry,
                error_handling=error_handling,
                fuse=fuse,
                on_error=on_error,
                concurrency=concurrency,
                ordered=ordered,
                timeout_ms=timeout_ms,
                parallelism=parallelism,
            )
        )
        return self

    def connect(
        self, source: str, target: str | None = None, *, capacity: int | None = None
    ) -> Workflow:
        """Add a connection and return the workflow.

        Either ``connect("a -> b.in")`` or ``connect("a", "b")``; each end may
        name a port after a dot (``"route.even"``).
        """
        text = source if target is None else f"{source} -> {target}"
        conn = parse_connection(text)
        if capacity is not None:
            conn = msgspec.structs.replace(conn, capacity=capacity)
        self.connections.append(conn)
        return self

    def route(self, source: str, target: str | None = None) -> Workflow:
        """Add a route (routed mode) and return the workflow.

        Either ``route("a -> b")`` or ``route("a", "b")``.
        """
        self.routes.append(
            parse_route(source if target is None else f"{source} -> {target}")
        )
        return self

    def get_node(self, node_id: str) -> WorkflowNode:
        """Return the node with this id.

        Raises:
            KeyError: No node has that id.
        """
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)


def parse_connection(text: str) -> Connection:
    """Parse ``"a -> b"`` or ``"a.port -> b.port"`` into a `Connection`.

    Raises:
        ValueError: The text is not of that form.
    """
    left, arrow, right = text.partition("->")
    from_node, from_dot, from_port = left.partition(".")
    to_node, to_dot, to_port = right.partition(".")
    from_node, from_port = from_node.strip(), from_port.strip()
    to_node, to_port = to_node.strip(), to_port.strip()
    # An empty name, or a dot with no port after it, is a typo, not a default.
    if (
        not arrow
        or "->" in right
        or not from_node
        or not to_node
        or (from_dot and not from_port)
        or (to_dot and not to_port)
    ):
        msg = f"cannot read connection {text!r}; write 'a -> b' or 'a.port -> b.port'"
        raise ValueError(msg)
    return Connection(
        from_node=from_node,
        from_port=from_port or "out",
        to_node=to_node,
        to_port=to_port or "in",
    )


def parse_route(text: str) -> Route:
    """Parse ``"a -> b"`` into a `Route`.

    Raises:
        ValueError: The text is not of that form (steps have no ports).
    """
    left, arrow, right = text.partition("->")
    from_node, to_node = left.strip(), right.strip()
    if not arrow or "->" in right or not from_node or not to_node:
        msg = f"cannot read route {text!r}; write 'a -> b'"
        raise ValueError(msg)
    return Route(from_node=from_node, to_node=to_node)


_IN_FILES = frozenset(
    {
        "FN_FIELDS",
        "describe_validation_error",
        "dump_workflow",
        "load_workflow",
        "parse_workflow",
        "portable",
        "read_workflow",
        "write_workflow",
    }
)


def __getattr__(name: str) -> Any:
    """The document functions, moved to `workflow_files`, under their old path.

    Imported on first use: `workflow_files` builds on this module's model.
    """
    if name in _IN_FILES:
        from . import workflow_files

        return getattr(workflow_files, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
