"""`Dataflow`: the graph a fluent, typed pipeline is built in, and how it runs.

`Dataflow.source` starts a `DataStream`; each stream method adds a node to
the dataflow's `Workflow` (``flow.workflow``), which `run` and `arun` run
with the dataflow's registry.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

from ..core.node import NodeSpec
from ..core.workflow import ContinueOnError, Mode, Workflow
from ..engine import FlowRuntime, default_registry
from .base import StreamBase, builds
from .stream import DataStream

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Unpack

    from ..runtime.options import RunSettings
    from ..runtime.protocol import Executor
    from ..runtime.registry import NodeRegistry
    from ..runtime.result import RunResult
    from .connectors import Source

__all__ = ["Dataflow"]

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")


class Dataflow:
    """A workflow built from typed streams; runs with `run` or `arun`.

    Args:
        name: The workflow's name.
        mode: ``"dag"`` (finite sources, the default) or ``"stream"``.
        registry: Where node types named by string are found; ``@node``
            functions given to `DataStream.then` are registered here. Defaults
            to the built-ins plus installed packs.
        description: Free text.
    """

    def __init__(
        self,
        name: str,
        *,
        mode: Mode = "dag",
        registry: NodeRegistry | None = None,
        description: str = "",
    ) -> None:
        self.workflow = Workflow(name, mode=mode, description=description)
        self.registry = registry if registry is not None else default_registry()
        self._ids: dict[str, itertools.count[int]] = {}

    def __repr__(self) -> str:
        wf = self.workflow
        return f"<Dataflow {wf.name!r}: {len(wf.nodes)} nodes>"

    # --- building -------------------------------------------------------------

    def _id(self, type_id: str, name: str | None) -> str:
        if name is not None:
            return name
        verb = type_id.rpartition(".")[2].replace(":", "_") or "node"
        counter = self._ids.setdefault(verb, itertools.count(1))
        taken = {n.id for n in self.workflow.nodes}
        while True:
            candidate = f"{verb}_{next(counter)}"
            if candidate not in taken:
                return candidate

    def _type(self, type_: str | NodeSpec) -> str | NodeSpec:
        if isinstance(type_, NodeSpec):
            self.registry.register(type_)
            return type_
        if type_ in self.registry or ":" in type_:
            return type_
        self.registry.get(type_)  # raises, with a hint for an unregistered @node
        return type_

    def add_node(
        self,
        type_: str | NodeSpec,
        config: Mapping[str, Any] | None = None,
        *,
        inputs: Mapping[str, StreamBase[Any]] = {},
        name: str | None = None,
        **settings: Any,
    ) -> str:
        """Add a node fed by ``inputs`` (port -> stream) and return its id.

        ``settings`` are the node's workflow settings (``retry``,
        ``error_handling``, ``concurrency``, ``fuse``...).

        Raises:
            UnknownNodeType: ``type_`` names no registered type; a type
                declared by ``@node`` but not registered gets a hint.
            ValueError: A stream belongs to another dataflow.
        """
        resolved = self._type(type_)
        type_id = resolved.type_id if isinstance(resolved, NodeSpec) else resolved
        node_id = self._id(type_id, name)
        self.workflow.node(node_id, resolved, dict(config or {}), **settings)
        for port, stream in inputs.items():
            if stream.flow is not self:
                msg = f"stream {stream} belongs to {stream.flow!r}, not {self!r}"
                raise ValueError(msg)
            self.workflow.connect(f"{stream.node}.{stream.port}", f"{node_id}.{port}")
        return node_id

    @overload
    def source(
        self, source: Source[T], *, name: str | None = None
    ) -> DataStream[T]: ...

    @overload
    def source(
        self, source: Source[Any], *, schema: type[S], name: str | None = None
    ) -> DataStream[S]: ...

    def source(
        self,
        source: Source[Any],
        *,
        schema: type[Any] | None = None,
        name: str | None = None,
    ) -> DataStream[Any]:
        """Add a source (`flowstream.dataflow.connectors`) and return its stream.

        Args:
            source: The source node.
            schema: A type msgspec converts each item to (a `msgspec.Struct`,
                a dataclass, a TypedDict); an item that does not fit goes to
                the conversion node's ``error`` port with the reason.
            name: The node id (default: made from the type).
        """
        node_id = self.add_node(source.type_id, source.config, name=name or source.name)
        stream: DataStream[Any] = DataStream(self, node_id)
        if schema is None:
            return stream
        return stream.map(
            _Converter(schema), name=f"{node_id}_as_{schema.__name__.lower()}"
        ).with_settings(error_handling=ContinueOnError())

    @builds("control.merge")
    def merge(self, *streams: DataStream[T], name: str | None = None) -> DataStream[T]:
        """One stream of the items of all ``streams``, in arrival order."""
        ports = [f"in{i}" for i in range(len(streams))]
        node_id = self.add_node(
            "control.merge",
            {"inputs": ports},
            inputs=dict(zip(ports, streams, strict=True)),
            name=name,
        )
        return DataStream(self, node_id)

    @builds("control.zip")
    def zip(
        self, left: DataStream[T], right: DataStream[U], *, name: str | None = None
    ) -> DataStream[list[Any]]:
        """Pairs ``[l, r]`` of one item from each stream, in order."""
        node_id = self.add_node(
            "control.zip",
            {"inputs": ["left", "right"]},
            inputs={"left": left, "right": right},
            name=name,
        )
        return DataStream(self, node_id)

    # --- running --------------------------------------------------------------

    def runtime(self) -> FlowRuntime:
        """A `FlowRuntime` over this dataflow's registry."""
        return FlowRuntime(self.registry)

    def validate(self) -> None:
        """Check the workflow now (running checks it too).

        Raises:
            WorkflowValidationError: Lists every problem.
        """
        self.runtime().validate(self.workflow)

    def executor(self, **options: Unpack[RunSettings]) -> Executor:
        """An executor for one run, to `stop` (stream mode) or `cancel` it."""
        return self.runtime().executor(self.workflow, **options)

    def run(self, **options: Unpack[RunSettings]) -> RunResult:
        """Run to the end and return the `RunResult` (see `FlowRuntime.run`).

        Inside a running event loop (Jupyter) the run takes a worker thread;
        ``await flow.arun()`` runs on that loop instead.
        """
        return self.runtime().run(self.workflow, **options)

    async def arun(self, **options: Unpack[RunSettings]) -> RunResult:
        """Run to the end on the running event loop."""
        return await self.runtime().arun(self.workflow, **options)


class _Converter:
    """``msgspec.convert(x, schema)``, named after the schema (for plans)."""

    __slots__ = ("__qualname__", "schema")

    def __init__(self, schema: type[Any]) -> None:
        self.schema = schema
        self.__qualname__ = f"as_{schema.__name__}"

    def __call__(self, item: Any) -> Any:
        return msgspec.convert(item, self.schema, from_attributes=True)
