"""The node author's API: the `node` decorator, `NodeSpec`, and the `Node` protocol.

A node type is declared once and runs nothing until a runtime instantiates it::

    class Scale(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
        factor: float = 2.0

    @node("transform.scale", config=Scale)
    async def scale(inp: AsyncIterator[float], *, config: Scale):
        async for x in inp:
            yield x * config.factor

Ports come from the signature:

* positional parameters are input ports; a lone input is port ``in`` (name
  the parameter ``inp``: ``in`` is a keyword); with several inputs, each
  parameter's name is its port (``"src -> add.a"``);
* in an async generator, inputs are async iterators of items and yielded values
  go to port ``out``;
* in a one-shot function (``async def f(a, b) -> v`` or a plain ``def``), each
  input is one item and the return value goes to ``out``; with several inputs
  the function is called once per set of one item from each port (zip);
* a keyword-only ``config`` receives the validated config struct and a
  keyword-only ``ctx`` the `NodeContext` (other output ports, state, events);
* every node has an ``error`` output port for dead letters.

A class with ``execute`` (same rules) plus optional async ``initialize(ctx)`` and
``shutdown()`` is the `Node` protocol form; its ``__init__`` takes the config.

What a running node reaches through ``ctx`` is in `flowstream.core.context`;
batch kernels and `ItemFailed` are in `flowstream.core.kernels` (both are
importable from here too).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import msgspec

from .context import NodeContext as NodeContext, NodeState as NodeState
from .kernels import (
    DROPPED as DROPPED,
    KEPT as KEPT,
    ItemFailed as ItemFailed,
    ItemKernel as ItemKernel,
    Kernel as Kernel,
    KernelFactory as KernelFactory,
)

__all__ = [
    "DROPPED",
    "ERROR_PORT",
    "OUT_PORT",
    "ItemFailed",
    "ItemKernel",
    "KEPT",
    "Kernel",
    "KernelFactory",
    "Node",
    "NodeContext",
    "NodeFactory",
    "NodeSpec",
    "NodeState",
    "PartitionCheck",
    "StateRescaler",
    "declared_location",
    "node",
]

OUT_PORT = "out"
ERROR_PORT = "error"

PortsFactory = Callable[[Any], tuple[Sequence[str], Sequence[str]]]
"""Names a node's (inputs, extra outputs) from its validated config."""

PartitionCheck = Callable[[Any], str | None]
"""Whether a source with this config can run several instances: None if it
can (each instance then reads its own part of the input, told by
``ctx.instance`` and ``ctx.instances``), else why not, for the validation
message."""

StateRescaler = Callable[
    [Sequence[dict[str, Any]], int, Callable[[Any], int]], list[dict[str, Any]]
]
"""Moves a parallel node's state to another number of instances.

Called as ``rescale(states, m, place)`` when a run restored from a checkpoint
has ``m`` instances of the node where the checkpoint has ``len(states)``:
``states`` are the old instances' states (decoded, empty for an instance
that held none), ``place(key)`` is the new instance (``0 <= i < m``) that
owns a grouping key, and the result is the ``m`` new states. A keyed node
puts every per-key entry where ``place`` says; a stateless one may deal its
entries out in any way.
"""

Shape = Literal["stream", "call"]

F = TypeVar("F", bound=Callable[..., Any])


@runtime_checkable
class Node(Protocol):
    """A node instance as the runtime drives it.

    ``initialize`` runs before the first item, ``shutdown`` after the last one
    whatever happened. ``execute`` follows the decorator's port rules.
    """

    async def initialize(self, ctx: NodeContext) -> None:
        """Acquire resources (connections, files) before the run."""

    async def shutdown(self) -> None:
        """Release them; called even when the run failed or was cancelled."""


class NodeFactory(Protocol):
    """Makes node instances of one type from validated config."""

    @property
    def type_id(self) -> str:
        """The registered type id, ``category.verb``."""

    def decode_config(self, raw: dict[str, Any]) -> Any:
        """Validate a raw config mapping into the node's config type."""

    def create(self, config: Any) -> Node:
        """Return a new node instance for one run."""


class _FunctionNode:
    """Adapts a decorated function to the `Node` protocol."""

    __slots__ = ("execute",)

    def __init__(self, execute: Callable[..., Any]) -> None:
        self.execute = execute

    async def initialize(self, ctx: NodeContext) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    """An immutable description of a node type; made by the `node` decorator.

    Attributes:
        type_id: The registered id, ``category.verb``.
        fn: The decorated function or class, unchanged; unit tests may call it
            directly on plain async iterables.
        shape: ``"stream"`` (async generator over input iterators) or
            ``"call"`` (one-shot: one item per input, one result).
        is_async: For ``"call"``, whether the function is a coroutine function.
        is_class: The node is a class implementing `Node`.
        inputs: Input port names, in parameter order.
        params: The parameter name behind each input port.
        outputs: Output port names; always includes ``out`` and ``error``.
        config_type: The msgspec struct the config is validated against.
        wants_config: ``fn`` takes a keyword-only ``config``.
        wants_ctx: ``fn`` takes a keyword-only ``ctx``.
        batched: Inputs yield lists and the node yields lists (batch-aware).
        kernel: Builds a batch kernel for fused 1-in/1-out stateless chains.
        lift: A user generator that is a plain map or filter may run as a
            per-item function (`flowstream.runtime.lifting`); False: never.
        ports: Names the input ports and extra output ports from the config,
            for nodes whose ports the user chooses (``control.route``); the
            function then takes its inputs as ``*inputs``, in that order.
        needs_end: The node emits only at end of input (like ``reduce``), so it
            cannot follow an unbounded source in stream mode.
        timed: The node waits on its inputs with deadlines
            (``flowstream.runtime.feeds.next_item``), so its inputs are always
            channels and it is never fused behind another node.
        stops_itself: A source that ends by itself when ``ctx.stopping`` is
            set (after handing over what it already took in), instead of
            having its wait cancelled by a graceful stop.
        aligned: A batch-aware node with several inputs that reads them
            through `flowstream.nodes.control.merge_batches`, which aligns
            checkpoint barriers across them (so it can run under stream
            checkpoints).
        rescale: Moves the state of the node's instances to another
            parallelism at a restore from a checkpoint (`StateRescaler`);
            None: instances that hold state cannot be rescaled.
        partitioned: A source that can run several instances, each reading
            its own part of the input (``ctx.instance`` of ``ctx.instances``):
            says why a config cannot (`PartitionCheck`); None: one instance.
        coalesce: A batch-aware node with one input read from a channel
            takes, in one batch, the batches waiting there, up to this many
            items: when it falls behind it gets fewer, larger batches (a
            node whose cost is per batch catches up), and while it keeps
            up, batches as they were sent. 0: never.
        description: First line of the docstring.
        location: ``module.qualname:line``, for error messages.
    """

    type_id: str
    fn: Any
    shape: Shape
    is_async: bool = True
    is_class: bool = False
    inputs: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outputs: tuple[str, ...] = (OUT_PORT, ERROR_PORT)
    config_type: type[msgspec.Struct] | None = None
    wants_config: bool = False
    wants_ctx: bool = False
    batched: bool = False
    kernel: KernelFactory | None = None
    lift: bool = True
    ports: PortsFactory | None = None
    needs_end: bool = False
    timed: bool = False
    stops_itself: bool = False
    aligned: bool = False
    rescale: StateRescaler | None = None
    partitioned: PartitionCheck | None = None
    coalesce: int = 0
    description: str = ""
    location: str = ""

    @property
    def is_source(self) -> bool:
        """Whether the node has no input ports (dynamic ports count as inputs).

        See `resolve_ports`.
        """
        return not self.inputs and self.ports is None

    def resolve_ports(self, config: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Return the (inputs, outputs) of a node of this type with ``config``."""
        if self.ports is None:
            return self.inputs, self.outputs
        inputs, extra = self.ports(config)
        outputs = (
            OUT_PORT,
            ERROR_PORT,
            *(p for p in extra if p not in (OUT_PORT, ERROR_PORT)),
        )
        return tuple(inputs), outputs

    def decode_config(self, raw: dict[str, Any]) -> Any:
        """Validate ``raw`` against the config type and return the struct.

        Raises:
            msgspec.ValidationError: The config does not fit; the message has
                the field path.
        """
        if self.config_type is None:
            if raw:
                names = ", ".join(sorted(raw))
                msg = f"takes no config, got {names}"
                raise msgspec.ValidationError(msg)
            return None
        return msgspec.convert(raw, self.config_type)

    def create(self, config: Any) -> Node:
        """Return a node instance bound to ``config``."""
        if self.is_class:
            instance: Node = self.fn(config) if self.wants_config else self.fn()
            return instance
        return _FunctionNode(self.fn)


def _location(obj: Any) -> str:
    target = inspect.unwrap(obj)
    code = getattr(target, "__code__", None)
    if code is not None:
        # A function's first line without reading its source file (which
        # getsourcelines does, for every node type, at every start-up).
        return f"{target.__module__}.{target.__qualname__}:{code.co_firstlineno}"
    try:
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        line = 0
    return f"{target.__module__}.{target.__qualname__}:{line}"


def _ports(
    type_id: str, fn: Callable[..., Any], where: str, skip_self: bool, dynamic: bool
) -> tuple[tuple[str, ...], tuple[str, ...], bool, bool]:
    """Read input ports and the config/ctx keywords off a signature."""
    params = list(inspect.signature(fn).parameters.values())
    if skip_self:
        params = params[1:]
    inputs: list[str] = []
    names: list[str] = []
    wants_config = wants_ctx = False
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            inputs.append("in" if p.name == "inp" else p.name)
            names.append(p.name)
        elif p.kind is p.KEYWORD_ONLY and p.name == "config":
            wants_config = True
        elif p.kind is p.KEYWORD_ONLY and p.name == "ctx":
            wants_ctx = True
        elif p.kind is p.VAR_POSITIONAL and dynamic:
            pass  # inputs named by the ports= factory
        else:
            msg = (
                f"node {type_id!r} ({where}): parameter {p.name!r} is not supported; "
                "use positional input ports and keyword-only 'config' and 'ctx'"
            )
            raise TypeError(msg)
    if len(inputs) == 1:
        # A lone input is always port "in", whatever the parameter is called.
        inputs = ["in"]
    return tuple(inputs), tuple(names), wants_config, wants_ctx


def _check_struct(type_id: str, given: Any, where: str) -> type[msgspec.Struct]:
    if not (isinstance(given, type) and issubclass(given, msgspec.Struct)):
        msg = f"node {type_id!r} ({where}): config must be a msgspec.Struct type"
        raise TypeError(msg)
    return given


def _config_type(
    type_id: str, fn: Callable[..., Any], given: type[msgspec.Struct] | None, where: str
) -> type[msgspec.Struct] | None:
    if given is not None:
        return _check_struct(type_id, given, where)
    # Resolve only this annotation: the others may name TYPE_CHECKING imports.
    hint = inspect.signature(fn).parameters["config"].annotation
    if isinstance(hint, str):
        try:
            hint = eval(hint, getattr(fn, "__globals__", {}))
        except Exception:
            hint = None
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return hint
    msg = (
        f"node {type_id!r} ({where}): takes 'config' but its type is unknown; "
        "pass config=YourStruct to @node or annotate the parameter"
    )
    raise TypeError(msg)


_DECLARED: dict[str, str] = {}
"""Where each type id was declared by `node` (one entry per id: bounded by
the code), so that an unregistered id gets a hint, not just "unknown"."""


def declared_location(type_id: str) -> str | None:
    """Where ``@node(type_id)`` was applied in this process, if it was."""
    return _DECLARED.get(type_id)


def node(
    type_id: str,
    *,
    config: type[msgspec.Struct] | None = None,
    outputs: Sequence[str] = (),
    batched: bool = False,
    kernel: KernelFactory | None = None,
    lift: bool = True,
    ports: PortsFactory | None = None,
    needs_end: bool = False,
    timed: bool = False,
    stops_itself: bool = False,
    aligned: bool = False,
    rescale: StateRescaler | None = None,
    partitioned: PartitionCheck | None = None,
    coalesce: int = 0,
    description: str | None = None,
) -> Callable[[Any], NodeSpec]:
    """Declare a node type; the decorated function or class becomes a `NodeSpec`.

    Checks the signature at decoration time and runs nothing.

    Args:
        type_id: ``category.verb``, unique in a registry.
        config: The msgspec struct that validates the node's config; taken from
            the ``config`` parameter's annotation when omitted.
        outputs: Output ports besides ``out`` and ``error``.
        batched: Inputs yield lists of items and the node yields lists.
        kernel: A batch kernel factory (for built-in stateless nodes).
        lift: False keeps a plain map/filter generator a generator (no lift).
        ports: Names the ports from the config (``(inputs, extra outputs)``);
            the function takes its inputs as ``*inputs``.
        needs_end: The node emits only at end of input.
        timed: The node waits on inputs with deadlines (never fused behind).
        stops_itself: A source that watches ``ctx.stopping`` and ends itself.
        aligned: Reads several inputs through ``merge_batches`` (which aligns
            checkpoint barriers); needs ``batched``.
        rescale: Moves instances' state to another parallelism at a restore
            (`StateRescaler`); keyed and stateful stateless nodes give one.
        partitioned: A source whose instances each read a part of the input
            (`PartitionCheck`).
        coalesce: Take what waits in the input channel in one batch, up to
            this many items (`NodeSpec.coalesce`); needs ``batched``.
        description: Overrides the docstring's first line.

    Raises:
        TypeError: The signature does not follow the port rules; the message
            names the function and its line.
        ValueError: ``type_id`` is not ``category.verb`` (raised when the
            decorator is applied, so that it can name the function).
    """

    def decorate(obj: Any) -> NodeSpec:
        where = _location(obj)
        if "." not in type_id or type_id.startswith(".") or type_id.endswith("."):
            msg = f"node type id {type_id!r} ({where}) must be 'category.verb'"
            raise ValueError(msg)
        is_class = inspect.isclass(obj)
        fn = getattr(obj, "execute", None) if is_class else obj
        if fn is None or not callable(fn):
            msg = f"node {type_id!r} ({where}): a node class needs an execute method"
            raise TypeError(msg)
        if inspect.isasyncgenfunction(fn):
            shape: Shape = "stream"
            is_async = True
        else:
            shape = "call"
            is_async = inspect.iscoroutinefunction(fn)
            if batched:
                msg = f"node {type_id!r} ({where}): batched needs an async generator"
                raise TypeError(msg)
        if aligned and not batched:
            msg = f"node {type_id!r} ({where}): aligned needs batched=True"
            raise TypeError(msg)
        if coalesce and not batched:
            msg = f"node {type_id!r} ({where}): coalesce needs batched=True"
            raise TypeError(msg)
        inputs, names, wants_config, wants_ctx = _ports(
            type_id, fn, where, is_class, ports is not None
        )
        if len(set(inputs)) != len(inputs):
            msg = f"node {type_id!r} ({where}): two parameters map to port 'in'"
            raise TypeError(msg)
        if is_class:
            init_params = list(inspect.signature(obj).parameters)
            wants_config = bool(init_params)
            if wants_config and config is None:
                msg = (
                    f"node {type_id!r} ({where}): __init__ takes a config; pass config="
                )
                raise TypeError(msg)
            config_type = config
        elif wants_config:
            config_type = _config_type(type_id, fn, config, where)
        else:
            config_type = config
        if config_type is not None:
            _check_struct(type_id, config_type, where)
        # Each port once, in the order given.
        extra = tuple(
            p for p in dict.fromkeys(outputs) if p not in (OUT_PORT, ERROR_PORT)
        )
        doc = description if description is not None else inspect.getdoc(obj) or ""
        _DECLARED[type_id] = where
        return NodeSpec(
            type_id=type_id,
            fn=obj,
            shape=shape,
            is_async=is_async,
            is_class=is_class,
            inputs=inputs,
            params=names,
            outputs=(OUT_PORT, ERROR_PORT, *extra),
            config_type=config_type,
            wants_config=wants_config,
            wants_ctx=wants_ctx,
            batched=batched,
            kernel=kernel,
            lift=lift,
            ports=ports,
            needs_end=needs_end,
            timed=timed,
            stops_itself=stops_itself,
            aligned=aligned,
            rescale=rescale,
            partitioned=partitioned,
            coalesce=coalesce,
            description=doc.strip().splitlines()[0] if doc.strip() else "",
            location=where,
        )

    return decorate
