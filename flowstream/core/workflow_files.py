"""Workflow documents: a `Workflow` read from JSON, YAML or TOML, and written back.

Reading reports every structural mistake at once, as one
`WorkflowValidationError` naming each node and field (msgspec stops at the
first error, so a culprit field is dropped and the conversion tried again);
sections and fields the workflow's mode does not use are refused. Writing
turns each live callable into its ``"module:attr"`` reference (`portable`)
and refuses one that has none. The format follows the file's extension.
What needs the node registry (types, ports, configs, cycles) is checked by
`flowstream.runtime.validation`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..errors import EncodeError, Problem, WorkflowValidationError
from .codec import DocumentFormat, decode_document, document_format, encode_document
from .live import LiveRef, find_live
from .workflow import (
    Connection,
    Route,
    Workflow,
    WorkflowNode,
    parse_connection,
    parse_route,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FN_FIELDS",
    "describe_validation_error",
    "dump_workflow",
    "load_workflow",
    "parse_workflow",
    "portable",
    "read_workflow",
    "write_workflow",
]

_SECTIONS = ("nodes", "connections", "routes")
_ROUTED_ONLY = ("entry", "max_steps", "routes")


_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `(.*)`")


def describe_validation_error(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """Split msgspec's "message - at `$.a.b`" into (message, "a.b").

    A missing or unknown field is named in msgspec's message, not its path; it
    is appended to the path so that the problem names the field.
    """
    text = str(exc)
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        message, path = text, ""
    path = path.rstrip("`").removeprefix("$").lstrip(".")
    named = _NAMED_FIELD.match(message)
    if named is not None:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return message[:1].lower() + message[1:], path or None


_T = TypeVar("_T", bound=msgspec.Struct)


def _parse_edges(
    obj: dict[str, Any],
    section: str,
    parse: Callable[[str], _T],
    kind: type[_T],
    problems: list[Problem],
) -> list[_T]:
    """Read a list of edges written as strings ("a -> b") or records."""
    raw_edges = obj.get(section, [])
    if not isinstance(raw_edges, list):
        problems.append(Problem(f"must be a list of {section}", field=section))
        return []
    edges: list[_T] = []
    for i, raw in enumerate(raw_edges):
        where = f"{section}[{i}]"
        if isinstance(raw, str):
            try:
                edges.append(parse(raw))
            except ValueError as exc:
                problems.append(Problem(str(exc), field=where))
            continue
        edge, found = _convert_all(raw, kind)
        problems += [
            msgspec.structs.replace(p, field=f"{where}.{p.field}" if p.field else where)
            for p in found
        ]
        if edge is not None:
            edges.append(edge)
    return edges


def parse_workflow(obj: Any, *, source: str | None = None) -> Workflow:
    """Build a `Workflow` from decoded document data, reporting every mistake.

    Raises:
        WorkflowValidationError: Lists each structural problem with its node.
    """
    if not isinstance(obj, dict):
        problem = Problem(f"a workflow must be a mapping, got {type(obj).__name__}")
        raise WorkflowValidationError([problem], source)
    problems: list[Problem] = []
    header = {k: v for k, v in obj.items() if k not in _SECTIONS}
    workflow, found = _convert_all(header, Workflow)
    problems += found
    header_ok = not found
    if workflow is None:
        name = obj.get("name")
        workflow = Workflow(name=name if isinstance(name, str) else "")

    raw_nodes = obj.get("nodes", [])
    if not isinstance(raw_nodes, list):
        problems.append(Problem("must be a list of nodes", field="nodes"))
        raw_nodes = []
    for i, raw in enumerate(raw_nodes):
        label = raw.get("id") if isinstance(raw, dict) else None
        node_name = label if isinstance(label, str) else f"nodes[{i}]"
        decl, found = _convert_all(raw, WorkflowNode)
        problems += [msgspec.structs.replace(p, node=node_name) for p in found]
        if decl is not None:
            workflow.nodes.append(decl)

    workflow.connections += _parse_edges(
        obj, "connections", parse_connection, Connection, problems
    )
    workflow.routes += _parse_edges(obj, "routes", parse_route, Route, problems)
    if header_ok:  # with a bad mode, which sections belong is unknown
        problems += _mode_problems(obj, workflow)
    if problems:
        raise WorkflowValidationError(problems, source)
    return workflow


def _mode_problems(obj: dict[str, Any], workflow: Workflow) -> list[Problem]:
    """Sections and fields that the workflow's mode does not use."""
    problems: list[Problem] = []
    if workflow.mode == "routed":
        if obj.get("connections"):
            problems.append(
                Problem(
                    "a routed workflow joins its steps with routes, not connections",
                    field="connections",
                )
            )
        # Limits the dataflow runtime enforces, which routed steps would ignore.
        if workflow.memory_budget_mb is not None:
            problems.append(
                Problem(
                    "only a dataflow (dag or stream) has a memory budget",
                    field="memory_budget_mb",
                )
            )
        problems += [
            Problem(
                "only a dataflow's one-shot nodes take timeout_ms",
                node=node.id,
                field="timeout_ms",
            )
            for node in workflow.nodes
            if node.timeout_ms is not None
        ]
        return problems
    for key in _ROUTED_ONLY:
        if obj.get(key) not in (None, []):
            problems.append(
                Problem(f"only a routed workflow (mode: routed) has {key}", field=key)
            )
    for node in workflow.nodes:
        if node.on_error is not None:
            problems.append(
                Problem(
                    "only a routed workflow (mode: routed) has on_error routes",
                    node=node.id,
                    field="on_error",
                )
            )
    return problems


def _convert_all(raw: Any, cls: type[_T]) -> tuple[_T | None, list[Problem]]:
    """Convert ``raw`` to ``cls`` (None if it cannot be) and every wrong field.

    msgspec stops at the first error, so the culprit field is dropped and the
    conversion tried again, until it succeeds or a required field is at fault.
    """
    if not isinstance(raw, dict):
        return None, [Problem(f"expected a mapping, got {type(raw).__name__}")]
    problems: list[Problem] = []
    raw = dict(raw)
    required = {f.encode_name for f in msgspec.structs.fields(cls) if f.required}
    while True:
        try:
            return msgspec.convert(raw, cls), problems
        except msgspec.ValidationError as exc:
            message, path = describe_validation_error(exc)
            problems.append(Problem(message, field=path))
            key = (path or "").split(".", 1)[0].split("[", 1)[0]
            if key not in raw or key in required:
                return None, problems
            del raw[key]


def load_workflow(
    data: bytes | str, format: DocumentFormat, *, source: str | None = None
) -> Workflow:
    """Decode a workflow document held in memory.

    Raises:
        DecodeError: The text is not valid JSON, YAML or TOML.
        WorkflowValidationError: The document is not a well-formed workflow.
    """
    raw = data.encode() if isinstance(data, str) else data
    return parse_workflow(
        decode_document(raw, format, name=source or ""), source=source
    )


FN_FIELDS = frozenset({"fn", "merge"})
"""The names of the config fields that take a ``"module:attr"`` reference
(`flowstream.core.expr.FnRef`): a live callable there is written as its
reference when it has one. A test checks the registered node types."""


def portable(workflow: Workflow) -> Workflow:
    """The workflow with each live callable replaced by its ``"module:attr"``.

    Only a callable that imports back to itself, in a field that takes a
    reference (``fn``, ``merge``) or as a node type (a ``@node`` function),
    can be written; a lambda, a closure or a callable in a CEL field cannot.

    Raises:
        EncodeError: Some live callable cannot be written; the message names
            each node and field.
    """
    problems: list[str] = []
    nodes: list[WorkflowNode] = []
    for decl in workflow.nodes:
        changes: dict[str, Any] = {}
        if isinstance(decl.type, LiveRef):
            if decl.type.importable:
                changes["type"] = str(decl.type)
            else:
                problems.append(
                    f"node {decl.id!r}, type: {decl.type!s} is not importable "
                    "(define the @node function at module level)"
                )
        found = find_live(decl.config)
        if found:
            changes["config"] = msgspec.json.decode(
                msgspec.json.encode(decl.config, enc_hook=str)
            )
        for path, ref in found:
            last = re.split(r"[.\[]", path)[-1]
            if ref.importable and last in FN_FIELDS:
                continue
            why = (
                "a CEL field takes no reference"
                if ref.importable
                else "a lambda or local function has no 'module:attr'"
            )
            problems.append(
                f"node {decl.id!r}, config.{path}: the Python callable {ref!s} "
                f"cannot be written to a file ({why}); use a CEL expression or "
                "a module-level function in an 'fn' field"
            )
        nodes.append(msgspec.structs.replace(decl, **changes) if changes else decl)
    if problems:
        msg = f"workflow {workflow.name!r} holds Python callables: " + "; ".join(
            problems
        )
        raise EncodeError(msg)
    return msgspec.structs.replace(workflow, nodes=nodes)


def dump_workflow(workflow: Workflow, format: DocumentFormat) -> bytes:
    """Encode a workflow as a JSON, YAML or TOML document.

    Live callables are written as their ``"module:attr"`` (see `portable`).

    Raises:
        EncodeError: The workflow cannot be written in that format (a null
            config value in TOML, for one), or holds a Python callable that
            has no reference; the message names the node and field.
    """
    return encode_document(portable(workflow), format)


def read_workflow(path: str | Path) -> Workflow:
    """Read a workflow file; the format follows the extension.

    Raises:
        DecodeError: Unknown extension, or text that is not a valid document.
        WorkflowValidationError: The document is not a well-formed workflow.
        OSError: The file cannot be read.
    """
    return load_workflow(
        Path(path).read_bytes(), document_format(path), source=str(path)
    )


def write_workflow(workflow: Workflow, path: str | Path) -> None:
    """Write a workflow file; the format follows the extension."""
    Path(path).write_bytes(dump_workflow(workflow, document_format(path)))
