"""flowstream: a push-based streaming dataflow engine.

A workflow is a graph of nodes (async generators) joined by bounded channels
that carry micro-batches. The same graph runs to completion (DAG mode, it
returns its outputs) or continuously (stream mode, until stopped).

The package is layered, and imports only go one way (a test enforces it)::

    flowstream.core      values, codec, workflow model, node API, event types;
                         no event loop
    flowstream.runtime   channels, executor, event bus, registry, validation,
                         checkpoints; knows no node type until given a registry
    flowstream.nodes     the standard node library
    connectors/          the outside world (WebSocket, HTTP, files, SQLite),
                         loaded through entry points
    flowstream.engine    the composition root: `default_registry` (built-ins and
                         installed packs) and `FlowRuntime`
    flowstream.routed    routed flows: steps, actions, a shared store over storage
    flowstream.dataflow  the fluent typed API (Dataflow, DataStream[T])
    flowstream.testing   helpers for testing node types and workflows
    flowstream.cli       the command line
    flowstream.server    the HTTP/WebSocket API, the web UI, metrics

Routed flows, dataflows and the test helpers sit above the composition root
(each offers a default registry or a `FlowRuntime`) and beside each other;
routed flows and dataflows can still be nested both ways, through the
``routed.flow`` node type and a flow step naming a workflow.

This module re-exports the public API; everything not listed in ``__all__``
may change without notice. Public submodules: `flowstream.errors`,
`flowstream.testing`, `flowstream.nodes`, `flowstream.dataflow`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

if TYPE_CHECKING:
    # What type checkers see; at run time `__getattr__` imports `_api` on the
    # first read of a public name, so `import flowstream.cli` stays cheap.
    # The names are listed once, in `_api`.
    from ._api import *

__all__ = [
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
    "expr_function",
    "next_item",
    "node",
    "open_channel",
    "read_workflow",
    "validate",
    "write_workflow",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        msg = f"module 'flowstream' has no attribute {name!r}"
        raise AttributeError(msg)
    from . import _api

    value = getattr(_api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
