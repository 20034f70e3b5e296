"""The workflow model: nodes, connections, failure policies, and their files.

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

Reading a document reports every structural mistake at once as a
`WorkflowValidationError`; what needs the node registry (types, ports,
configs, cycles) is checked by `flowstream.runtime.validation`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from ..errors import EncodeError, Problem, WorkflowValidationError
from .codec import (
    DocumentFormat,
    decode_document,
    document_format,
    encode_document,
)
from .live import LiveRef, find_live, live, live_config
from .policies import (
    Checkpoint as Checkpoint,
    ContinueOnError as ContinueOnError,
    ErrorHandling as ErrorHandling,
    RetryPolicy as RetryPolicy,
    RetryWorkflow as RetryWorkflow,
    StopWorkflow as StopWorkflow,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .node import NodeSpec

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


# --- documents ---------------------------------------------------------------

_SECTIONS = ("nodes", "connections", "routes")
_ROUTED_ONLY = ("entry", "max_steps", "routes")


_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(.*)`")


def describe_validation_error(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's "message - at `$.a.b`" into (message, "a.b").

    A missing or unknown field is named in msgspec's message, not its path; it
    is appended to the path so that the problem names the field.
    """
    text = str(exc)
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        message, path = text, ""
    path = path.rstrip("`").removeprefix("$").lstrip(".")
    named = _NAMED_FIELD.match(message)
    if named is not None:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return message[:1].lower() + message[1:], path or None


_T = TypeVar("_T", bound=msgspec.Struct)


def _parse_edges(
    obj: dict[str, Any],
    section: str,
    parse: Callable[[str], _T],
    kind: type[_T],
    problems: list[Problem],
) -> list[_T]:
    """Read a list of edges written as strings ("a -> b") or records."""
    raw_edges = obj.get(section, [])
    if not isinstance(raw_edges, list):
        problems.append(Problem(f"must be a list of {section}", field=section))
        return []
    edges: list[_T] = []
    for i, raw in enumerate(raw_edges):
        where = f"{section}[{i}]"
        if isinstance(raw, str):
            try:
                edges.append(parse(raw))
            except ValueError as exc:
                problems.append(Problem(str(exc), field=where))
            continue
        edge, found = _convert_all(raw, kind)
        problems += [
            msgspec.structs.replace(p, field=f"{where}.{p.field}" if p.field else where)
            for p in found
        ]
        if edge is not None:
            edges.append(edge)
    return edges


def parse_workflow(obj: Any, *, source: str | None = None) -> Workflow:
    """Build a `Workflow` from decoded document data, reporting every mistake.

    Raises:
        WorkflowValidationError: Lists each structural problem with its node.
    """
    if not isinstance(obj, dict):
        problem = Problem(f"a workflow must be a mapping, got {type(obj).__name__}")
        raise WorkflowValidationError([problem], source)
    problems: list[Problem] = []
    header = {k: v for k, v in obj.items() if k not in _SECTIONS}
    workflow, found = _convert_all(header, Workflow)
    problems += found
    header_ok = not found
    if workflow is None:
        name = obj.get("name")
        workflow = Workflow(name=name if isinstance(name, str) else "")

    raw_nodes = obj.get("nodes", [])
    if not isinstance(raw_nodes, list):
        problems.append(Problem("must be a list of nodes", field="nodes"))
        raw_nodes = []
    for i, raw in enumerate(raw_nodes):
        label = raw.get("id") if isinstance(raw, dict) else None
        node_name = label if isinstance(label, str) else f"nodes[{i}]"
        decl, found = _convert_all(raw, WorkflowNode)
        problems += [msgspec.structs.replace(p, node=node_name) for p in found]
        if decl is not None:
            workflow.nodes.append(decl)

    workflow.connections += _parse_edges(
        obj, "connections", parse_connection, Connection, problems
    )
    workflow.routes += _parse_edges(obj, "routes", parse_route, Route, problems)
    if header_ok:  # with a bad mode, which sections belong is unknown
        problems += _mode_problems(obj, workflow)
    if problems:
        raise WorkflowValidationError(problems, source)
    return workflow


def _mode_problems(obj: dict[str, Any], workflow: Workflow) -> list[Problem]:
    """Sections and fields that the workflow's mode does not use."""
    problems: list[Problem] = []
    if workflow.mode == "routed":
        if obj.get("connections"):
            problems.append(
                Problem(
                    "a routed workflow joins its steps with routes, not connections",
                    field="connections",
                )
            )
        # Limits the dataflow runtime enforces, which routed steps would ignore.
        if workflow.memory_budget_mb is not None:
            problems.append(
                Problem(
                    "only a dataflow (dag or stream) has a memory budget",
                    field="memory_budget_mb",
                )
            )
        problems += [
            Problem(
                "only a dataflow's one-shot nodes take timeout_ms",
                node=node.id,
                field="timeout_ms",
            )
            for node in workflow.nodes
            if node.timeout_ms is not None
        ]
        return problems
    for key in _ROUTED_ONLY:
        if obj.get(key) not in (None, []):
            problems.append(
                Problem(f"only a routed workflow (mode: routed) has {key}", field=key)
            )
    for node in workflow.nodes:
        if node.on_error is not None:
            problems.append(
                Problem(
                    "only a routed workflow (mode: routed) has on_error routes",
                    node=node.id,
                    field="on_error",
                )
            )
    return problems


def _convert_all(raw: Any, cls: type[_T]) -> tuple[_T | None, list[Problem]]:
    """Convert ``raw`` to ``cls`` (None if it cannot be) and every wrong field.

    msgspec stops at the first error, so the culprit field is dropped and the
    conversion tried again, until it succeeds or a required field is at fault.
    """
    if not isinstance(raw, dict):
        return None, [Problem(f"expected a mapping, got {type(raw).__name__}")]
    problems: list[Problem] = []
    raw = dict(raw)
    required = {f.encode_name for f in msgspec.structs.fields(cls) if f.required}
    while True:
        try:
            return msgspec.convert(raw, cls), problems
        except msgspec.ValidationError as exc:
            message, path = describe_validation_error(exc)
            problems.append(Problem(message, field=path))
            key = (path or "").split(".", 1)[0].split("[", 1)[0]
            if key not in raw or key in required:
                return None, problems
            del raw[key]


def load_workflow(
    data: bytes | str, format: DocumentFormat, *, source: str | None = None
) -> Workflow:
    """Decode a workflow document held in memory.

    Raises:
        DecodeError: The text is not valid JSON, YAML or TOML.
        WorkflowValidationError: The document is not a well-formed workflow.
    """
    raw = data.encode() if isinstance(data, str) else data
    return parse_workflow(
        decode_document(raw, format, name=source or ""), source=source
    )


FN_FIELDS = frozenset({"fn", "merge"})
"""The names of the config fields that take a ``"module:attr"`` reference
(`flowstream.core.expr.FnRef`): a live callable there is written as its
reference when it has one. A test checks the registered node types."""


def portable(workflow: Workflow) -> Workflow:
    """The workflow with each live callable replaced by its ``"module:attr"``.

    Only a callable that imports back to itself, in a field that takes a
    reference (``fn``, ``merge``) or as a node type (a ``@node`` function),
    can be written; a lambda, a closure or a callable in a CEL field cannot.

    Raises:
        EncodeError: Some live callable cannot be written; the message names
            each node and field.
    """
    problems: list[str] = []
    nodes: list[WorkflowNode] = []
    for decl in workflow.nodes:
        changes: dict[str, Any] = {}
        if isinstance(decl.type, LiveRef):
            if decl.type.importable:
                changes["type"] = str(decl.type)
            else:
                problems.append(
                    f"node {decl.id!r}, type: {decl.type!s} is not importable "
                    "(define the @node function at module level)"
                )
        found = find_live(decl.config)
        if found:
            changes["config"] = msgspec.json.decode(
                msgspec.json.encode(decl.config, enc_hook=str)
            )
        for path, ref in found:
            last = re.split(r"[.\[]", path)[-1]
            if ref.importable and last in FN_FIELDS:
                continue
            why = (
                "a CEL field takes no reference"
                if ref.importable
                else "a lambda or local function has no 'module:attr'"
            )
            problems.append(
                f"node {decl.id!r}, config.{path}: the Python callable {ref!s} "
                f"cannot be written to a file ({why}); use a CEL expression or "
                "a module-level function in an 'fn' field"
            )
        nodes.append(msgspec.structs.replace(decl, **changes) if changes else decl)
    if problems:
        msg = f"workflow {workflow.name!r} holds Python callables: " + "; ".join(
            problems
        )
        raise EncodeError(msg)
    return msgspec.structs.replace(workflow, nodes=nodes)


def dump_workflow(workflow: Workflow, format: DocumentFormat) -> bytes:
    """Encode a workflow as a JSON, YAML or TOML document.

    Live callables are written as their ``"module:attr"`` (see `portable`).

    Raises:
        EncodeError: The workflow cannot be written in that format (a null
            config value in TOML, for one), or holds a Python callable that
            has no reference; the message names the node and field.
    """
    return encode_document(portable(workflow), format)


def read_workflow(path: str | Path) -> Workflow:
    """Read a workflow file; the format follows the extension.

    Raises:
        DecodeError: Unknown extension, or text that is not a valid document.
        WorkflowValidationError: The document is not a well-formed workflow.
        OSError: The file cannot be read.
    """
    return load_workflow(
        Path(path).read_bytes(), document_format(path), source=str(path)
    )


def write_workflow(workflow: Workflow, path: str | Path) -> None:
    """Write a workflow file; the format follows the extension."""
    Path(path).write_bytes(dump_workflow(workflow, document_format(path)))
