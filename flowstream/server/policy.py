"""What a workflow submitted over HTTP may use, checked with validation.

Uploaded workflows are untrusted. They may use CEL expressions (sandboxed by
design) but name Python callables (``fn: "module:attr"``) only from modules
on the server's allowlist: importing any other module could run its code.
Node types that reach the server's files or import code
(`DENIED_NODE_TYPES`) are refused unless the server allows them.

Problems are reported as validation problems, with every other problem of the
workflow, in one `WorkflowValidationError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import expr_fields
from ..errors import Problem, UnknownNodeType, WorkflowValidationError
from ..runtime.validation import validate

if TYPE_CHECKING:
    from ..core.workflow import Workflow
    from ..runtime.registry import NodeRegistry
    from ..runtime.validation import Graph
    from .config import ServerConfig

__all__ = ["check_workflow"]

# validation's wording for a refused callable, to find those problems again
_REFUSED = "Python callables are not allowed here"


def check_workflow(
    workflow: Workflow, registry: NodeRegistry, config: ServerConfig
) -> Graph:
    """Validate an uploaded workflow under the server's policy.

    Callables are imported (and so checked) only when every one of them is
    allowed; otherwise the disallowed ones are reported and none is imported.

    Raises:
        WorkflowValidationError: Every problem, the policy's included.
    """
    problems: list[Problem] = []
    allowed_refs: set[tuple[str, str]] = set()
    refused_refs: dict[tuple[str, str], str] = {}
    for decl in workflow.nodes:
        if not config.node_type_allowed(decl.type):
            problems.append(
                Problem(
                    f"node type {decl.type!r} is disabled on this server (it reaches "
                    "the server's files or imports code); start the server with "
                    f"--allow-node {decl.type} to allow it",
                    node=decl.id,
                    field="type",
                )
            )
        for path, ref in _callable_refs(decl.type, decl.config, registry):
            key = (decl.id, path)
            module = ref.partition(":")[0]
            if config.module_allowed(module):
                allowed_refs.add(key)
            else:
                refused_refs[key] = ref
    try:
        graph = validate(workflow, registry, allow_callables=not refused_refs)
    except WorkflowValidationError as exc:
        problems += _with_policy(exc.problems, allowed_refs, refused_refs, config)
        raise WorkflowValidationError(problems, exc.source) from None
    if problems:
        raise WorkflowValidationError(problems)
    return graph


def _callable_refs(
    type_id: str, raw: dict[str, Any], registry: NodeRegistry
) -> list[tuple[str, str]]:
    """``(field, "module:attr")`` for each callable a node names.

    A node type given by reference (``type: "module:attr"``) is one too: its
    module is imported by validation.
    """
    if ":" in type_id and type_id not in registry:
        return [("type", type_id)]
    try:
        spec = registry.get(type_id)
        config = spec.decode_config(raw)
    except (UnknownNodeType, ValueError, TypeError):
        return []  # validation reports these
    if config is None:
        return []
    return [
        (f"config.{path}", text)
        for path, kind, text in expr_fields(config)
        if kind == "fn"
    ]


def _with_policy(
    problems: list[Problem],
    allowed: set[tuple[str, str]],
    refused: dict[tuple[str, str], str],
    config: ServerConfig,
) -> list[Problem]:
    """Validation's problems, with refused callables explained by the policy."""
    modules = ", ".join(config.allow_modules) or "none"
    out = []
    for p in problems:
        key = (p.node or "", p.field or "")
        if p.message.startswith(_REFUSED):
            if key in allowed:
                continue  # allowed, but unchecked: another callable was refused
            if key in refused:
                text = (
                    f"Python callable {refused[key]!r} is not allowed on this server "
                    f"(allowed modules: {modules}); use a CEL expression"
                )
                p = msgspec.structs.replace(p, message=text)
        out.append(p)
    return out
