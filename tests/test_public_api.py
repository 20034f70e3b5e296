from __future__ import annotations

import flowstream

# The public API, spelled out: a change here is a change users see.
EXPECTED = {
    "Action",
    "Backoff",
    "ChannelStatistics",
    "Connection",
    "ContinueOnError",
    "Control",
    "DEFAULT_MAX_DEPTH",
    "DataStream",
    "Dataflow",
    "DeadLetter",
    "ErrorHandling",
    "EventBus",
    "ExecutionEvent",
    "Executor",
    "Expr",
    "expr_function",
    "ExprCondition",
    "FilePath",
    "FileStorage",
    "Flow",
    "FlowResult",
    "FlowRuntime",
    "FnRef",
    "Graph",
    "Json",
    "KeyEquals",
    "KeyExists",
    "Limits",
    "ListenHost",
    "MemoryStorage",
    "NO_ITEM",
    "NestingLimit",
    "Node",
    "NodeCompleted",
    "NodeContext",
    "NodeEvent",
    "NodeFactory",
    "NodeFailed",
    "NodeRegistry",
    "NodeSpec",
    "NodeStarted",
    "NodeState",
    "NodeStats",
    "OutboundUrl",
    "ReceiveChannel",
    "RetryPolicy",
    "RetryWorkflow",
    "Route",
    "RouteTaken",
    "RunOptions",
    "RunRestarted",
    "RunResult",
    "RunSettings",
    "SQLiteStorage",
    "SQLiteWorker",
    "SandboxedConfig",
    "SendChannel",
    "SharedStore",
    "StepContext",
    "StopWorkflow",
    "Storage",
    "Stream",
    "Subscription",
    "Value",
    "Workflow",
    "WorkflowCompleted",
    "WorkflowExecutor",
    "WorkflowNode",
    "WorkflowStarted",
    "__version__",
    "check_url",
    "decode",
    "default_registry",
    "encode",
    "next_item",
    "node",
    "open_channel",
    "read_workflow",
    "validate",
    "write_workflow",
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(flowstream.__all__) == EXPECTED


def test_all_is_sorted_and_resolvable() -> None:
    assert flowstream.__all__ == sorted(flowstream.__all__)
    for name in flowstream.__all__:
        assert hasattr(flowstream, name), name


def test_public_objects_show_the_public_module() -> None:
    assert flowstream.FlowRuntime.__module__ == "flowstream"
    assert flowstream.node.__module__ == "flowstream"
    assert flowstream.open_channel.__module__ == "flowstream"
    assert flowstream.Flow.__module__ == "flowstream"
    assert flowstream.SharedStore.__module__ == "flowstream"


def test_testing_helpers_run_a_node() -> None:
    import asyncio

    from flowstream.nodes.transform import map_items
    from flowstream.testing import assert_emits, run_nodes

    async def check() -> None:
        out = await run_nodes(map_items, [1, 2, 3], {"expr": "x * 10"})
        assert out["out"] == [10, 20, 30]
        await assert_emits(map_items, [1, 2], [3, 4], {"expr": "x + 2"})

    asyncio.run(check())
