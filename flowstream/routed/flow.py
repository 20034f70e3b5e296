"""`Flow`: a graph of steps with routes, built in Python or read from a file.

::

    flow = (
        Flow.builder("signup")
        .add_node("start", StartNode())
        .add_node("process", ProcessNode(), retry=RetryPolicy(max_attempts=3))
        .add_route("start", "process")
        .build()
    )
    result = await flow.arun(inputs={"email": "a@example.com"})

A step is any object with an async ``execute(ctx)`` returning an `Action` (or
None), or a bare ``async def step(ctx)``. Routes say which step may follow
which; an action may only move along a route (a step may also name routes
itself, through a ``targets()`` method, as ``step.branch`` does). ``build()``
checks everything at once and raises a `WorkflowValidationError` naming each
culprit: duplicate or malformed ids, objects that are not steps, routes from
or to unknown steps, a missing entry step, steps unreachable from the entry.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

from ..core.workflow import NODE_ID, RetryPolicy
from ..errors import Problem, WorkflowValidationError
from ..runtime.events import EventBus
from .run import FlowResult, StepContext, run_flow

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path
    from typing import Self

    from ..core.node import NodeSpec
    from ..core.workflow import Workflow
    from ..runtime.registry import NodeRegistry
    from .action import Action
    from .storage import Storage
    from .store import SharedStore

__all__ = ["DEFAULT_MAX_STEPS", "Flow", "FlowBuilder", "FlowNode", "Step"]

DEFAULT_MAX_STEPS = 1000
"""How many steps a run may take unless the flow says otherwise."""


@runtime_checkable
class Step(Protocol):
    """A step of a routed flow.

    ``execute`` runs once per visit (and again on each retry). One instance
    serves every run of the flow, concurrent ones included: keep per-run data
    in ``ctx.store`` or ``ctx.params``, not on the instance. A step may also
    define ``targets()``, the step ids its actions can lead to; they become
    routes of the flow.
    """

    async def execute(self, ctx: StepContext) -> Action | None:
        """Do the step's work and return what runs next (None: the only route)."""
        ...


class _FunctionStep:
    """Adapts ``async def step(ctx)`` to the `Step` protocol."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[StepContext], Awaitable[Action | None]]) -> None:
        self.fn = fn

    async def execute(self, ctx: StepContext) -> Action | None:
        return await self.fn(ctx)

    def __repr__(self) -> str:
        return f"<step {getattr(self.fn, '__qualname__', self.fn)!r}>"


@dataclass(frozen=True, eq=False)
class FlowNode:
    """A step as the flow holds it.

    Attributes:
        id: The step's id in the flow.
        step: The step object.
        type: Its type, for events: a registered ``step.*`` id, or the
            step's ``type_id`` attribute, or its class's qualified name.
        retry: How often to retry it when it raises.
        on_error: Where to go when it still fails.
        routes: The steps that may follow it, in the order declared.
    """

    id: str
    step: Step
    type: str
    retry: RetryPolicy | None = None
    on_error: str | None = None
    routes: tuple[str, ...] = ()


def _type_name(step: Any) -> str:
    explicit = getattr(step, "type_id", None)
    if isinstance(explicit, str):
        return explicit
    if isinstance(step, _FunctionStep):
        fn = step.fn
        return f"{fn.__module__}.{getattr(fn, '__qualname__', repr(fn))}"
    cls = type(step)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_step(obj: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(obj, "execute", None))


@final
class Flow:
    """A validated routed flow of steps.

    Get one from `Flow.builder`, `Flow.read` or `Flow.from_workflow`.

    Attributes:
        name: The flow's name.
        entry: The first step.
        max_steps: How many steps one run may take.
        nodes: The steps by id.
        bus: Where every run's events go; subscribe to watch runs.
    """

    def __init__(
        self,
        *,
        name: str,
        nodes: Mapping[str, FlowNode],
        entry: str,
        max_steps: int = DEFAULT_MAX_STEPS,
        bus: EventBus | None = None,
    ) -> None:
        self.name = name
        self.nodes = dict(nodes)
        self.entry = entry
        self.max_steps = max_steps
        self.bus = bus if bus is not None else EventBus()

    @staticmethod
    def builder(name: str) -> FlowBuilder:
        """Start building a flow named ``name``."""
        return FlowBuilder(name)

    @classmethod
    def from_workflow(
        cls,
        workflow: Workflow,
        *,
        steps: NodeRegistry | None = None,
        source: str | None = None,
    ) -> Flow:
        """Build a flow from a ``mode: routed`` workflow; see `flowstream.routed.files`.

        Raises:
            WorkflowValidationError: Lists every problem of the workflow.
        """
        from .files import flow_from_workflow

        return flow_from_workflow(workflow, steps=steps, source=source)

    @classmethod
    def read(cls, path: str | Path, *, steps: NodeRegistry | None = None) -> Flow:
        """Read a routed workflow file (JSON, YAML or TOML) into a flow.

        Raises:
            DecodeError: The file is not a valid document.
            WorkflowValidationError: Lists every problem of the workflow.
            OSError: The file cannot be read.
        """
        from .files import read_flow

        return read_flow(path, steps=steps)

    @property
    def routes(self) -> list[tuple[str, str]]:
        """Every route as ``(from, to)``, in declaration order."""
        return [(n.id, to) for n in self.nodes.values() for to in n.routes]

    async def arun(
        self,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        store: SharedStore | None = None,
        storage: Storage | None = None,
        namespace: str | None = None,
        max_steps: int | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> FlowResult:
        """Run the flow once, from its entry step, and return the result.

        A failing step does not raise: the result says ``failed`` and names
        the step. Cancelling the caller cancels the run.

        Args:
            params: What the entry step receives as ``ctx.params``.
            inputs: Keys to set in the store before the first step.
            store: The store to use, as it is (its namespace included).
            storage: A backend for a new store (a `MemoryStorage` if None).
            namespace: The new store's namespace; the run id if None, which
                isolates this run from every other one.
            max_steps: Overrides the flow's ``max_steps`` for this run.
            sleep: Waits between retries (tests pass a fake clock's).

        Raises:
            ValueError: ``store`` given with ``storage`` or ``namespace``, or
                ``max_steps`` below 1.
        """
        return await run_flow(
            self,
            params=params,
            inputs=inputs,
            store=store,
            storage=storage,
            namespace=namespace,
            max_steps=max_steps,
            sleep=sleep,
        )

    def run(self, **options: Any) -> FlowResult:
        """Blocking form of `arun`, for scripts (starts its own event loop)."""
        return asyncio.run(self.arun(**options))

    def as_node(
        self, type_id: str, *, concurrency: int = 8, input_key: str = "input"
    ) -> NodeSpec:
        """Return a dataflow node type that runs this flow once per item.

        See `flowstream.routed.bridge.flow_node`.
        """
        from .bridge import flow_node

        return flow_node(self, type_id, concurrency=concurrency, input_key=input_key)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r} steps={len(self.nodes)} entry={self.entry!r}>"


@final
class FlowBuilder:
    """Collects steps and routes; `build` checks them all and makes the `Flow`.

    Nothing is checked until `build`, so that every problem is reported at
    once.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[
            tuple[str, Any, RetryPolicy | None, str | None, str | None]
        ] = []
        self._routes: list[tuple[str, str]] = []
        self._entry: str | None = None
        self._max_steps = DEFAULT_MAX_STEPS
        self._bus: EventBus | None = None

    def add_node(
        self,
        node_id: str,
        step: Step | Callable[[StepContext], Awaitable[Action | None]],
        *,
        retry: RetryPolicy | None = None,
        on_error: str | None = None,
        type_id: str | None = None,
    ) -> Self:
        """Add a step; the first one added is the entry unless `entry` says.

        Args:
            node_id: The step's id (letters, digits, ``_`` and ``-``).
            step: An object with an async ``execute(ctx)``, or an async
                function of ``ctx``.
            retry: Retry the step when it raises.
            on_error: The step to go to when it still fails.
            type_id: The step's type in events; by default the step's
                ``type_id`` attribute, or its class's qualified name.
        """
        self._nodes.append((node_id, step, retry, on_error, type_id))
        return self

    def add_route(self, from_node: str, to_node: str) -> Self:
        """Allow step ``to_node`` to follow step ``from_node``."""
        self._routes.append((from_node, to_node))
        return self

    def entry(self, node_id: str) -> Self:
        """Start runs at ``node_id`` instead of the first step added."""
        self._entry = node_id
        return self

    def max_steps(self, limit: int) -> Self:
        """Fail a run that takes more than ``limit`` steps (a runaway loop)."""
        self._max_steps = limit
        return self

    def bus(self, bus: EventBus) -> Self:
        """Publish the flow's events on ``bus`` instead of a new one."""
        self._bus = bus
        return self

    def build(self, *, source: str | None = None) -> Flow:
        """Check the flow and return it.

        Args:
            source: What to name in the error (a file name); the flow's name
                if None.

        Raises:
            WorkflowValidationError: Lists every problem, each naming its step.
        """
        flow, problems = self.check()
        if problems:
            raise WorkflowValidationError(problems, source or f"flow {self.name!r}")
        assert flow is not None
        return flow

    def check(self, known: Iterable[str] = ()) -> tuple[Flow | None, list[Problem]]:
        """Return the flow (None if invalid) and every problem found.

        ``known`` names steps that exist but could not be added (a file's
        step with a bad type), so that routes to them are not reported too.
        """
        problems: list[Problem] = []
        nodes: dict[str, FlowNode] = {}
        known_ids = set(known)
        for node_id, step, retry, on_error, type_id in self._nodes:
            if not isinstance(node_id, str) or not NODE_ID.match(node_id):
                problems.append(
                    Problem(
                        "a step id must start with a letter or _ and hold only "
                        "letters, digits, _ and -",
                        node=str(node_id),
                    )
                )
                continue
            if node_id in nodes or node_id in known_ids:
                problems.append(Problem("duplicate step id", node=node_id))
                continue
            if not _is_step(step) and inspect.iscoroutinefunction(step):
                step = _FunctionStep(step)
            if not _is_step(step):
                problems.append(
                    Problem(
                        f"{step!r:.60} is not a step: it needs an async "
                        "execute(ctx) method (or be an async function of ctx)",
                        node=node_id,
                        field="step",
                    )
                )
                known_ids.add(node_id)
                continue
            if retry is not None and not isinstance(retry, RetryPolicy):
                problems.append(
                    Problem(
                        f"retry must be a RetryPolicy, got {type(retry).__name__}",
                        node=node_id,
                        field="retry",
                    )
                )
            kind = type_id if type_id is not None else _type_name(step)
            nodes[node_id] = FlowNode(node_id, step, kind, retry, on_error)
        every = known_ids | set(nodes)

        routes: dict[str, list[str]] = {n: [] for n in every}
        for from_node, to_node in self._routes:
            ok = True
            for end, node_id in (("from", from_node), ("to", to_node)):
                if node_id not in every:
                    problems.append(
                        Problem(
                            f"route {from_node} -> {to_node}: no step {node_id!r}",
                            node=from_node
                            if end == "to" and from_node in every
                            else None,
                            field="routes",
                        )
                    )
                    ok = False
            if ok and to_node not in routes[from_node]:
                routes[from_node].append(to_node)
        for n in nodes.values():
            targets = getattr(n.step, "targets", None)
            for target in targets() if callable(targets) else ():
                if target not in every:
                    problems.append(
                        Problem(
                            f"routes to unknown step {target!r}",
                            node=n.id,
                            field="config",
                        )
                    )
                elif target not in routes[n.id]:
                    routes[n.id].append(target)
            if n.on_error is not None and n.on_error not in every:
                problems.append(
                    Problem(f"no step {n.on_error!r}", node=n.id, field="on_error")
                )

        entry = self._entry
        if entry is None:
            entry = self._nodes[0][0] if self._nodes else None
        if entry is None:
            problems.append(
                Problem("the flow has no steps, so no entry step", field="entry")
            )
        elif entry not in every:
            problems.append(
                Problem(f"entry step {entry!r} does not exist", field="entry")
            )
        else:
            reached = _reachable(
                entry, routes, {n.id: n.on_error for n in nodes.values()}
            )
            for node_id in [n for n, *_ in self._nodes if isinstance(n, str)]:
                if node_id in nodes and node_id not in reached:
                    problems.append(
                        Problem(
                            f"unreachable from the entry step {entry!r}", node=node_id
                        )
                    )
        if (
            isinstance(self._max_steps, bool)
            or not isinstance(self._max_steps, int)
            or self._max_steps < 1
        ):
            problems.append(
                Problem(
                    f"must be an int >= 1, got {self._max_steps!r}", field="max_steps"
                )
            )
        if problems:
            return None, _unique(problems)
        assert entry is not None
        final_nodes = {
            nid: FlowNode(n.id, n.step, n.type, n.retry, n.on_error, tuple(routes[nid]))
            for nid, n in nodes.items()
        }
        flow = Flow(
            name=self.name,
            nodes=final_nodes,
            entry=entry,
            max_steps=self._max_steps,
            bus=self._bus,
        )
        return flow, []


def _reachable(
    entry: str, routes: Mapping[str, list[str]], on_error: Mapping[str, str | None]
) -> set[str]:
    seen = {entry}
    todo = deque([entry])
    while todo:
        current = todo.popleft()
        nexts = list(routes.get(current, ()))
        fallback = on_error.get(current)
        if fallback is not None:
            nexts.append(fallback)
        for target in nexts:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))
