"""Built-in steps, so that routed workflow files need no Python.

Expressions are CEL over ``store`` (every key of the run's store, as it was
when the step began) and ``params`` (what the step received):

* ``step.set``: set store keys from expressions (and delete some); then go to
  ``next`` (with ``params``, if given) or the step's only route.
* ``step.branch``: go to ``then`` if the expression ``if`` is true, else to
  ``else`` (both become routes of the flow).
* ``step.complete``: end the flow with ``result``.
* ``step.run_workflow``: run a dataflow workflow file (dag mode) and store its
  outputs; see `RunWorkflow`, which Python flows use directly.

In a file::

    - id: count
      type: step.set
      config: {values: {attempts: "store.attempts + 1"}}
    - id: again
      type: step.branch
      config: {if: "store.attempts < 3", then: count, else: done}
    - id: done
      type: step.complete
      config: {result: "{'attempts': store.attempts}"}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import Expr, compile_expr
from ..core.node import node
from ..core.resources import FilePath
from ..core.workflow import Workflow
from ..core.workflow_files import read_workflow
from ..engine import FlowRuntime
from ..runtime.registry import NodeRegistry
from .action import Action, ExprCondition

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..core.node import NodeSpec
    from ..runtime.validation import Graph
    from .run import StepContext

__all__ = [
    "BUILTIN_STEPS",
    "STEP_ENTRY_POINT_GROUP",
    "BranchConfig",
    "CompleteConfig",
    "RunWorkflow",
    "RunWorkflowConfig",
    "SetConfig",
    "cel_env",
    "evaluate",
    "step_registry",
]

STEP_ENTRY_POINT_GROUP = "flowstream.steps"


async def cel_env(ctx: StepContext) -> dict[str, Any]:
    """The variables a step's CEL expressions see: ``store`` and ``params``."""
    return {"store": await ctx.store.snapshot(), "params": dict(ctx.params)}


def _ordered(value: Any) -> Any:
    # CEL maps come back in hash order, which changes between processes:
    # sorted keys keep results and files reproducible.
    if type(value) is dict:
        try:
            items = sorted(value.items())
        except TypeError:  # keys of mixed types
            items = list(value.items())
        return {k: _ordered(v) for k, v in items}
    if type(value) is list:
        return [_ordered(v) for v in value]
    return value


def evaluate(expr: str, env: Mapping[str, Any]) -> Any:
    """Evaluate a CEL expression; a failure names the expression.

    Maps in the result have their keys sorted (CEL maps have no order).

    Raises:
        ValueError: The expression failed on these values (a missing key, a
            type mismatch).
    """
    try:
        return _ordered(compile_expr(expr).execute(dict(env)))
    except KeyError as exc:
        msg = f"expression {expr!r} failed: no key {exc.args[0]!r}"
        raise ValueError(msg) from None
    except (TypeError, ValueError, RuntimeError) as exc:
        msg = f"expression {expr!r} failed: {exc}"
        raise ValueError(msg) from None


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class SetConfig(_Config, frozen=True, kw_only=True):
    """Config of ``step.set``.

    Attributes:
        values: Store key -> CEL expression; every expression sees the store
            as it was before the step.
        delete: Store keys to remove.
        next: The step to go to; None means the step's only route (or the
            end of the flow, from a step with no routes).
        params: Parameter -> CEL expression, passed to ``next``.
    """

    values: dict[str, Expr] = msgspec.field(default_factory=dict)
    delete: list[str] = msgspec.field(default_factory=list)
    next: str | None = None
    params: dict[str, Expr] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.params and self.next is None:
            msg = "params are passed to the next step: set 'next' too"
            raise ValueError(msg)


class SetStep:
    """Set store keys from CEL expressions over the store and params."""

    def __init__(self, config: SetConfig) -> None:
        self.config = config

    def targets(self) -> list[str]:
        return [self.config.next] if self.config.next else []

    async def execute(self, ctx: StepContext) -> Action | None:
        cfg = self.config
        env = await cel_env(ctx)
        values = {key: evaluate(expr, env) for key, expr in cfg.values.items()}
        params = {key: evaluate(expr, env) for key, expr in cfg.params.items()}
        await ctx.store.update(values)
        for key in cfg.delete:
            await ctx.store.delete(key)
        if cfg.next is None:
            return None
        return (
            Action.parameterized(cfg.next, params)
            if params
            else Action.simple(cfg.next)
        )


set_step = node("step.set", config=SetConfig)(SetStep)


class BranchConfig(_Config, frozen=True, kw_only=True):
    """Config of ``step.branch``.

    Attributes:
        condition: ``if``: a CEL expression that gives a bool.
        then: The step to go to when it is true.
        otherwise: ``else``: the step to go to when it is false.
    """

    condition: Expr = msgspec.field(name="if")
    then: str
    otherwise: str = msgspec.field(name="else")


class BranchStep:
    """Go to ``then`` or ``else`` depending on a CEL condition over the store."""

    def __init__(self, config: BranchConfig) -> None:
        self.config = config
        self.condition = ExprCondition(config.condition)

    def targets(self) -> list[str]:
        return [self.config.then, self.config.otherwise]

    async def execute(self, ctx: StepContext) -> Action:
        return Action.conditional(
            self.condition, self.config.then, self.config.otherwise
        )


branch_step = node("step.branch", config=BranchConfig)(BranchStep)


class CompleteConfig(_Config, frozen=True, kw_only=True):
    """Config of ``step.complete``.

    Attributes:
        result: A CEL expression: the flow's result (None if unset).
    """

    result: Expr | None = None


class CompleteStep:
    """End the flow with a result computed by a CEL expression."""

    def __init__(self, config: CompleteConfig) -> None:
        self.config = config

    async def execute(self, ctx: StepContext) -> Action:
        if self.config.result is None:
            return Action.complete()
        return Action.complete(evaluate(self.config.result, await cel_env(ctx)))


complete_step = node("step.complete", config=CompleteConfig)(CompleteStep)


class RunWorkflow:
    """A step that runs a dataflow workflow and stores what it produced.

    The workflow is read and validated when the step is made. Before each
    run, ``set`` overrides config fields from CEL expressions over the store
    (give those fields placeholder values in the file, so that it validates).
    The run's events go to the flow's bus, under the dataflow run's own id.
    A run that does not complete makes the step fail (so its retry policy and
    ``on_error`` route apply).

    Args:
        workflow: A `Workflow` or the path of a workflow file (dag mode).
        set: ``"node.field"`` -> CEL expression, applied to the node's config.
        outputs: Store key -> ``"node"`` or ``"node.port"``: the list of
            values that port emitted. If empty, the whole ``outputs`` mapping
            (``{node: {port: [values]}}``) is stored under ``"outputs"``.
        next: The step to go to; None means the step's only route.
        registry: Node types for the dataflow (the built-ins, installed packs
            and ``routed.flow`` if None).
        **options: `RunOptions` fields for the run (``max_parallel``...).

    Raises:
        WorkflowValidationError: The workflow is invalid.
        ValueError: ``set`` or ``outputs`` name a node the workflow lacks, or
            the workflow is not a dataflow.
    """

    type_id = "step.run_workflow"

    def __init__(
        self,
        workflow: Workflow | str | os.PathLike[str],
        *,
        set: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
        next: str | None = None,
        registry: NodeRegistry | None = None,
        **options: Any,
    ) -> None:
        if isinstance(workflow, Workflow):
            self.workflow = workflow
            source = None
        else:
            self.workflow = read_workflow(os.fspath(workflow))
            source = str(workflow)
        if self.workflow.mode == "routed":
            msg = (
                "a workflow step runs a dataflow (dag mode); run routed flows as steps"
            )
            raise ValueError(msg)
        if registry is None:
            from .bridge import dataflow_registry

            registry = dataflow_registry()
        self.registry = registry
        self.graph: Graph = FlowRuntime(registry).validate(self.workflow, source=source)
        ids = {n.id for n in self.workflow.nodes}
        self.overrides: list[tuple[str, str, str]] = []
        for target, expr in (set or {}).items():
            node_id, dot, field = target.partition(".")
            if not dot or not field or node_id not in ids:
                msg = f"set: {target!r} must be 'node.field', naming a workflow node"
                raise ValueError(msg)
            compile_expr(expr)
            self.overrides.append((node_id, field, expr))
        self.outputs: list[tuple[str, str, str]] = []
        for key, where in (outputs or {}).items():
            node_id, _, port = where.partition(".")
            if node_id not in ids:
                msg = f"outputs: {key!r}: the workflow has no node {node_id!r}"
                raise ValueError(msg)
            self.outputs.append((key, node_id, port or "out"))
        self.next = next
        self.options = options

    def targets(self) -> list[str]:
        """The step's ``next``, if set: a route of the flow."""
        return [self.next] if self.next else []

    async def execute(self, ctx: StepContext) -> Action | None:
        """Run the workflow and store its outputs."""
        target: Workflow | Graph = self.graph
        if self.overrides:
            env = await cel_env(ctx)
            changes: dict[str, dict[str, Any]] = {}
            for node_id, field, expr in self.overrides:
                changes.setdefault(node_id, {})[field] = evaluate(expr, env)
            target = msgspec.structs.replace(
                self.workflow,
                nodes=[
                    msgspec.structs.replace(n, config={**n.config, **changes[n.id]})
                    if n.id in changes
                    else n
                    for n in self.workflow.nodes
                ],
            )
        result = await FlowRuntime(self.registry, ctx.bus).arun(target, **self.options)
        if not result.ok:
            msg = f"workflow {self.workflow.name!r} {result.status}: {result.error}"
            raise RuntimeError(msg)
        values: dict[str, Any]
        if self.outputs:
            values = {
                key: result.outputs.get(node_id, {}).get(port, [])
                for key, node_id, port in self.outputs
            }
        else:
            values = {"outputs": dict(result.outputs)}
        await ctx.store.update(values)
        return Action.simple(self.next) if self.next else None

    def __repr__(self) -> str:
        return f"<RunWorkflow {self.workflow.name!r}>"


class RunWorkflowConfig(_Config, frozen=True, kw_only=True):
    """Config of ``step.run_workflow`` (see `RunWorkflow`).

    Attributes:
        workflow: The dataflow workflow file, relative to the working directory.
        set: ``"node.field"`` -> CEL expression, applied before each run.
        outputs: Store key -> ``"node"`` or ``"node.port"``.
        next: The step to go to; None means the step's only route.
    """

    workflow: FilePath
    set: dict[str, Expr] = msgspec.field(default_factory=dict)
    outputs: dict[str, str] = msgspec.field(default_factory=dict)
    next: str | None = None


class RunWorkflowStep:
    """Run a dataflow workflow file and store its outputs."""

    def __init__(self, config: RunWorkflowConfig) -> None:
        self.inner = RunWorkflow(
            Path(config.workflow),
            set=config.set,
            outputs=config.outputs,
            next=config.next,
        )

    def targets(self) -> list[str]:
        return self.inner.targets()

    async def execute(self, ctx: StepContext) -> Action | None:
        return await self.inner.execute(ctx)


run_workflow_step = node("step.run_workflow", config=RunWorkflowConfig)(RunWorkflowStep)


BUILTIN_STEPS: tuple[NodeSpec, ...] = (
    set_step,
    branch_step,
    complete_step,
    run_workflow_step,
)
"""The built-in step types, registered by `step_registry`."""


def step_registry(*, entry_points: bool = True) -> NodeRegistry:
    """Return a new registry of step types: the built-ins and installed packs.

    Packs register step types under the entry-point group ``flowstream.steps``
    the same way node packs do under ``flowstream.nodes``.
    """
    registry = NodeRegistry(BUILTIN_STEPS)
    if entry_points:
        registry.load_entry_points(STEP_ENTRY_POINT_GROUP)
    return registry
