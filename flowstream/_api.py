"""The public API, imported all at once (``flowstream/__init__.py`` loads it lazily).

``import flowstream`` stays cheap so that the command line starts fast: the
first public name read from the package imports this module, which imports
every re-exported object and marks it as ``flowstream``'s.
"""

from __future__ import annotations

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
    RunRestarted as RunRestarted,
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
)
from .core.workflow_files import (
    read_workflow as read_workflow,
    write_workflow as write_workflow,
)
from .dataflow import Dataflow as Dataflow, DataStream as DataStream
from .engine import FlowRuntime as FlowRuntime, default_registry as default_registry
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
from .runtime.local import WorkflowExecutor as WorkflowExecutor
from .runtime.netpolicy import check_url as check_url
from .runtime.options import RunOptions as RunOptions, RunSettings as RunSettings
from .runtime.protocol import Executor as Executor
from .runtime.registry import NodeRegistry as NodeRegistry
from .runtime.result import DeadLetter as DeadLetter, RunResult as RunResult
from .runtime.sqlite_worker import SQLiteWorker as SQLiteWorker
from .runtime.validation import Graph as Graph, validate as validate


def _fixup_module_metadata() -> None:
    # Show the public path in reprs and tracebacks (trio does the same). Only
    # classes and functions defined by us; aliases and typing forms are left,
    # and so are msgspec structs: msgspec and typing resolve their annotations
    # in the namespace of __module__.
    import msgspec

    for name in _public_names():
        obj = globals()[name]
        module = getattr(obj, "__module__", "")
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct):
            continue
        if isinstance(obj, type) or callable(obj):
            if (
                module.startswith("flowstream.")
                and getattr(obj, "__name__", "") == name
            ):
                try:
                    obj.__module__ = "flowstream"
                except (AttributeError, TypeError):
                    pass


def _public_names() -> list[str]:
    import flowstream

    return [name for name in flowstream.__all__ if name != "__version__"]


_fixup_module_metadata()
del _fixup_module_metadata
