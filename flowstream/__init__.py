"""flowstream: a push-based streaming dataflow engine.

A workflow is a graph of nodes (async generators) joined by bounded channels
that carry micro-batches. The same graph runs to completion (DAG mode, it
returns its outputs) or continuously (stream mode, until stopped).

The package is layered, and imports only go one way (a test enforces it)::

    flowstream.core      values, codec, workflow model, node API, event types;
                         no event loop
    flowstream.runtime   channels, executor, event bus, registry, validation,
                         checkpoints
    flowstream.nodes     the standard node library
    connectors/          the outside world (WebSocket, HTTP, files, SQLite)
    flowstream.routed    routed flows: steps, actions, a shared store over storage
    flowstream.dataflow  the fluent typed API (Dataflow, DataStream[T]) over
                         core and runtime
    flowstream.cli       the command line
    flowstream.server    the HTTP/WebSocket API, the web UI, metrics

Routed flows sit beside the node library: they build on ``core`` and
``runtime`` (workflow files, retry policies, events, the registry), and can be
nested both ways with dataflows.

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
    from .core.backoff import Backoff as Backoff
    from .core.codec import decode as decode, encode as encode
    from .core.events import (
        ExecutionEvent as ExecutionEvent,
        NodeCompleted as NodeCompleted,
        NodeEvent as NodeEvent,
        NodeFailed as NodeFailed,
        NodeStarted as NodeStarted,
        NodeStats as NodeStats,
        RouteTaken as RouteTaken,
        WorkflowCompleted as WorkflowCompleted,
        WorkflowStarted as WorkflowStarted,
    )
    from .core.expr import Expr as Expr, FnRef as FnRef, expr_function as expr_function
    from .core.nesting import (
        DEFAULT_MAX_DEPTH as DEFAULT_MAX_DEPTH,
        NestingLimit as NestingLimit,
    )
    from .core.node import (
        Node as Node,
        NodeContext as NodeContext,
        NodeFactory as NodeFactory,
        NodeSpec as NodeSpec,
        NodeState as NodeState,
        node as node,
    )
    from .core.resources import (
        FilePath as FilePath,
        ListenHost as ListenHost,
        OutboundUrl as OutboundUrl,
    )
    from .core.sandbox import Limits as Limits, SandboxedConfig as SandboxedConfig
    from .core.values import Json as Json, Stream as Stream, Value as Value
    from .core.workflow import (
        Connection as Connection,
        ContinueOnError as ContinueOnError,
        ErrorHandling as ErrorHandling,
        RetryPolicy as RetryPolicy,
        RetryWorkflow as RetryWorkflow,
        Route as Route,
        StopWorkflow as StopWorkflow,
        Workflow as Workflow,
        WorkflowNode as WorkflowNode,
        read_workflow as read_workflow,
        write_workflow as write_workflow,
    )
    from .dataflow import Dataflow as Dataflow, DataStream as DataStream
    from .routed.action import (
        Action as Action,
        ExprCondition as ExprCondition,
        KeyEquals as KeyEquals,
        KeyExists as KeyExists,
    )
    from .routed.flow import Flow as Flow
    from .routed.run import FlowResult as FlowResult, StepContext as StepContext
    from .routed.storage import (
        FileStorage as FileStorage,
        MemoryStorage as MemoryStorage,
        SQLiteStorage as SQLiteStorage,
        Storage as Storage,
    )
    from .routed.store import SharedStore as SharedStore
    from .runtime.channel import (
        ChannelStatistics as ChannelStatistics,
        Control as Control,
        ReceiveChannel as ReceiveChannel,
        SendChannel as SendChannel,
        open_channel as open_channel,
    )
    from .runtime.events import EventBus as EventBus, Subscription as Subscription
    from .runtime.feeds import NO_ITEM as NO_ITEM, next_item as next_item
    from .runtime.flow import FlowRuntime as FlowRuntime
    from .runtime.local import WorkflowExecutor as WorkflowExecutor
    from .runtime.netpolicy import check_url as check_url
    from .runtime.options import RunOptions as RunOptions, RunSettings as RunSettings
    from .runtime.protocol import Executor as Executor
    from .runtime.registry import NodeRegistry as NodeRegistry
    from .runtime.result import DeadLetter as DeadLetter, RunResult as RunResult
    from .runtime.sqlite_worker import SQLiteWorker as SQLiteWorker
    from .runtime.validation import Graph as Graph, validate as validate

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
