"""Routed flows: graphs of steps with routing rules, beside the dataflows.

Where a dataflow moves items through channels, a routed flow moves *control*:
one step runs at a time, returns an `Action` that names the next step, and
the steps share data through a `SharedStore`. That suits multi-step jobs,
retries with fallbacks and agent-style loops::

    class CheckLogin:
        async def execute(self, ctx: StepContext) -> Action:
            if await ctx.store.get("password", default=None) == "s3cret":
                await ctx.store.set("user_authenticated", True)
            return Action.conditional(
                KeyExists("user_authenticated"), "welcome", "login_failed"
            )

    flow = (
        Flow.builder("login")
        .add_node("check", CheckLogin())
        .add_node("welcome", welcome)
        .add_node("login_failed", login_failed)
        .add_route("check", "welcome")
        .add_route("check", "login_failed")
        .build()
    )
    result = await flow.arun(inputs={"password": "s3cret"})

The same flow can be a workflow file (``mode: routed``, see
`flowstream.routed.files`), run by ``flowstream run``. A flow can run inside a
dataflow, once per item (``routed.flow``, `Flow.as_node`), and a dataflow can
be a step of a flow (`RunWorkflow`, ``step.run_workflow``).

This package sits above ``core`` and ``runtime`` (it reuses their workflow
model, node registry, retry policies and event bus) and below the CLI.
"""

from __future__ import annotations

from .action import (
    Action as Action,
    Condition as Condition,
    ExprCondition as ExprCondition,
    KeyEquals as KeyEquals,
    KeyExists as KeyExists,
)
from .bridge import (
    ROUTED_NODES as ROUTED_NODES,
    dataflow_registry as dataflow_registry,
    flow_node as flow_node,
)
from .files import (
    flow_from_workflow as flow_from_workflow,
    load_flow as load_flow,
    read_flow as read_flow,
)
from .flow import (
    DEFAULT_MAX_STEPS as DEFAULT_MAX_STEPS,
    Flow as Flow,
    FlowBuilder as FlowBuilder,
    FlowNode as FlowNode,
    Step as Step,
)
from .run import FlowResult as FlowResult, StepContext as StepContext
from .steps import (
    BUILTIN_STEPS as BUILTIN_STEPS,
    RunWorkflow as RunWorkflow,
    step_registry as step_registry,
)
from .storage import (
    FileStorage as FileStorage,
    MemoryStorage as MemoryStorage,
    SQLiteStorage as SQLiteStorage,
    Storage as Storage,
)
from .store import SharedStore as SharedStore

__all__ = [
    "BUILTIN_STEPS",
    "DEFAULT_MAX_STEPS",
    "ROUTED_NODES",
    "Action",
    "Condition",
    "ExprCondition",
    "FileStorage",
    "Flow",
    "FlowBuilder",
    "FlowNode",
    "FlowResult",
    "KeyEquals",
    "KeyExists",
    "MemoryStorage",
    "RunWorkflow",
    "SQLiteStorage",
    "SharedStore",
    "Step",
    "StepContext",
    "Storage",
    "dataflow_registry",
    "flow_from_workflow",
    "flow_node",
    "load_flow",
    "read_flow",
    "step_registry",
]
