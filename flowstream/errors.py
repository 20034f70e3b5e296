"""Every exception flowstream raises on purpose, in one tree.

::

  Exception
   +-- FlowstreamError
        +-- WorkflowValidationError (also ValueError) bad workflow: every problem listed
        +-- UnknownNodeType (also LookupError)        a type id nobody registered
        +-- CodecError
        |    +-- EncodeError (also TypeError)         a value that has no wire form
        |    +-- DecodeError (also ValueError)        bytes that are not a document
        +-- NodeError                                 a node's own code failed
        +-- StateLimitError (also RuntimeError)       keyed state reached max_keys
        +-- TimeLimitExceeded (also TimeoutError)     one call ran over its time limit
        +-- MemoryBudgetExceeded (also MemoryError)   a run grew past its memory budget
        +-- SandboxError                              a sandboxed module trapped
        +-- ChannelError (also RuntimeError)
        |    +-- ClosedChannelError                   you used a half you had closed
        |    +-- BrokenChannelError                   the other side went away
        +-- ConnectorError
             +-- ConnectError                         could not reach the outside world
             |    +-- NetworkDenied (PermissionError) refused by the server's policy
             +-- ConnectionLost                       reached it, then lost it
             +-- ProtocolError                        the peer spoke nonsense

  EndOfStream, WouldBlock                             signals, not failures

Each class says who is at fault and what to do about it. Subclassing a builtin as
well lets callers catch generically (``except ValueError`` catches a bad workflow).
"""

from __future__ import annotations

import errno
from typing import Any

import msgspec

__all__ = [
    "BrokenChannelError",
    "ChannelError",
    "ClosedChannelError",
    "CodecError",
    "ConnectError",
    "ConnectionLost",
    "ConnectorError",
    "DecodeError",
    "EncodeError",
    "EndOfStream",
    "FlowstreamError",
    "MemoryBudgetExceeded",
    "NetworkDenied",
    "NodeError",
    "Problem",
    "ProtocolError",
    "SandboxError",
    "TimeLimitExceeded",
    "StateLimitError",
    "UnknownNodeType",
    "WorkflowValidationError",
    "WouldBlock",
    "preview",
]

_NO_ITEM: Any = object()  # NodeError: the failure was not on an item


class FlowstreamError(Exception):
    """Base class of every error flowstream raises on purpose."""


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One thing wrong with a workflow.

    Attributes:
        message: What is wrong and, where it helps, what was expected.
        node: The id of the node at fault, if one is.
        field: The config field, port or workflow field at fault, if one is.
    """

    message: str
    node: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.field is not None:
            where.append(self.field)
        return f"{', '.join(where)}: {self.message}" if where else self.message


class WorkflowValidationError(FlowstreamError, ValueError):
    """The workflow is wrong; the author of the workflow file must fix it.

    Validation runs to the end before raising, so ``problems`` lists every
    mistake found, each naming its node and field.
    """

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{head}{count} {noun}"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class UnknownNodeType(FlowstreamError, LookupError):
    """No node type is registered under this id: a typo, or a missing node pack.

    ``suggestions`` holds the closest registered ids.
    """

    def __init__(
        self, type_id: str, suggestions: list[str], *, declared_at: str | None = None
    ) -> None:
        self.type_id = type_id
        self.suggestions = suggestions
        hint = (
            f" (did you mean {', '.join(map(repr, suggestions))}?)"
            if suggestions
            else ""
        )
        if declared_at is not None:
            # Decorating declares a type; only registering makes it known.
            hint = (
                f": @node({type_id!r}) at {declared_at} declares it but nothing "
                "registered it; pass the function itself (Workflow.node(id, fn), "
                "stream.then(fn)), or register it "
                "(registry.register(fn), FlowRuntime(registry))"
            )
        super().__init__(f"unknown node type {type_id!r}{hint}")


class CodecError(FlowstreamError):
    """A value could not be encoded, or bytes could not be decoded."""


class EncodeError(CodecError, TypeError):
    """The value has no wire form (a Stream, a set, an arbitrary object).

    The caller handed the codec something it cannot represent; convert it to
    plain values first.
    """


class DecodeError(CodecError, ValueError):
    """The bytes are not a valid document of the expected format and shape.

    Whoever produced the bytes is at fault; the message keeps the decoder's
    path to the bad spot (``$.nodes[2].type``).
    """


class NodeError(FlowstreamError):
    """A node's own code raised; ``__cause__`` holds the original exception.

    Attributes:
        node_id: The node, as named in the workflow.
        node_type: Its registered type id.
    """

    def __init__(
        self,
        message: str,
        *,
        node_id: str,
        node_type: str,
        item: Any = _NO_ITEM,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        on = "" if item is _NO_ITEM else f" on item {preview(item)}"
        super().__init__(f"node {node_id!r} ({node_type}) failed{on}: {message}")


PREVIEW_LIMIT = 160
"""How many characters of an item an error message shows."""


def preview(value: Any, limit: int = PREVIEW_LIMIT) -> str:
    """A one-line copy of ``value`` for a message: JSON when it can be, cut short.

    Values JSON cannot hold are shown by ``repr``; a copy longer than
    ``limit`` characters ends with ``…`` and the full length.
    """
    try:
        text = msgspec.json.encode(value, enc_hook=repr).decode()
    except (TypeError, ValueError, OverflowError, RecursionError):
        text = repr(value)
    text = " ".join(text.split())  # one line, even for a repr with newlines
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text):,} characters)"
    return text


class StateLimitError(FlowstreamError, RuntimeError):
    """A node's keyed state reached its ``max_keys`` with ``on_max_keys: fail``.

    Not a bug: the input has more distinct keys than the node was allowed to
    hold. Raise ``max_keys``, choose ``on_max_keys: evict_oldest``, or bound
    the keys upstream.
    """


class TimeLimitExceeded(FlowstreamError, TimeoutError):
    """One call of a node ran over its time limit and was stopped (or discarded).

    The node's code is at fault (or the limit is too low for it): the item
    fails like any other failure, so ``continue_on_error`` sends it to the
    node's ``error`` port and the run goes on with the next one.
    """


class MemoryBudgetExceeded(FlowstreamError, MemoryError):
    """A run grew the process past its ``memory_budget_mb``; the run was stopped.

    The workflow holds too much at once (a window, a join, a batch), or the
    budget is too low for it: raise the budget or bound what the nodes keep.
    """


class SandboxError(FlowstreamError):
    """A sandboxed module trapped, broke the ABI or could not be loaded.

    The module's author is at fault (or the workflow's, for a grant or limit
    the module needs). A trap while running fails the items of the call,
    handled by the node's error handling; a module that cannot load (an
    import it was not granted, a missing export) fails the run at its start.
    """


class ChannelError(FlowstreamError, RuntimeError):
    """Misuse of a channel half, or a channel whose other side is gone."""


class ClosedChannelError(ChannelError):
    """You used a channel half after closing it yourself: a bug in the caller."""


class BrokenChannelError(ChannelError):
    """Every half on the other side is closed: nobody will ever receive this.

    Not the caller's fault; the consumer went away (finished or failed).
    """


class ConnectorError(FlowstreamError):
    """Trouble talking to the outside world."""


class ConnectError(ConnectorError):
    """Could not connect (refused, unreachable, bad address): check the endpoint."""


class NetworkDenied(ConnectError, PermissionError):
    """The server's network policy refused a connection or a listening address.

    Workflows submitted to a server reach only the hosts its operator allows
    (``--allow-net``), never loopback, link-local or private addresses unless
    allowed too, and listen on loopback only (``--allow-listen``). The
    workflow is at fault, or the server's policy is too narrow for it: the
    message names the address and the flag that would allow it. Never
    retried. A `PermissionError` too, so that socket code that handles
    `OSError` (as asyncio does for each address it tries) passes it on.
    """

    def __init__(self, message: str) -> None:
        # errno and strerror as OSError has them: socket code reads them.
        super().__init__(errno.EACCES, message)

    def __str__(self) -> str:
        return str(self.strerror)

    @staticmethod
    def found_in(exc: BaseException) -> NetworkDenied | None:
        """The refusal behind ``exc`` (a client library's wrapper), if any."""
        seen: set[int] = set()
        todo: list[BaseException] = [exc]
        while todo:
            current = todo.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, NetworkDenied):
                return current
            if isinstance(current, BaseExceptionGroup):
                todo.extend(current.exceptions)
            for linked in (current.__cause__, current.__context__):
                if linked is not None:
                    todo.append(linked)
        return None


class ConnectionLost(ConnectorError):
    """A connection that was up went down; connectors reconnect where they can."""


class ProtocolError(ConnectorError):
    """The peer broke the protocol (bad handshake, bad framing)."""


class EndOfStream(Exception):
    """Signal: the channel is closed and drained; nothing more will arrive."""


class WouldBlock(Exception):
    """Signal: a ``*_nowait`` call would have had to wait."""
