"""What a workflow submitted over HTTP may use, checked with validation.

Uploaded workflows are untrusted. They may use CEL expressions (sandboxed by
design) but name Python callables (``fn: "module:attr"``) only from modules
on the server's allowlist: importing any other module could run its code.
Node types that reach the server's files or import code
(`DENIED_NODE_TYPES`) are refused unless the server allows them. Every file
path resolves inside the server's data directory (`DataDir`), every URL a
config names must be allowed by the server's network policy, and listening
nodes bind loopback only (`NetPolicy`; the run enforces the same policy on
its sockets, after DNS resolution).

Sandboxed nodes (``wasm.*``: any type whose config is a `SandboxedConfig`)
may be used freely, since their code cannot reach anything it is not
granted, but under the server's rules: their limits at most the server's
ceilings, no ``files`` grant (only `UPLOAD_GRANTS`), and no path on the
server (a module is sent inline, ``base64:...``).

Problems are reported as validation problems, with every other problem of the
workflow, in one `WorkflowValidationError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..core.expr import expr_fields
from ..core.resources import resource_fields
from ..core.sandbox import SandboxedConfig
from ..errors import NetworkDenied, Problem, UnknownNodeType, WorkflowValidationError
from ..runtime.netpolicy import url_host_port
from ..runtime.validation import validate
from .config import UPLOAD_GRANTS
from .datadir import DataDir

if TYPE_CHECKING:
    from ..core.workflow import Workflow, WorkflowNode
    from ..runtime.netpolicy import NetPolicy
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

    Returns:
        The graph to run: its workflow has every file path resolved inside
        the server's data directory.

    Raises:
        WorkflowValidationError: Every problem, the policy's included.
    """
    workflow, path_problems = DataDir.of(config).confine(workflow, registry)
    policy = config.net_policy
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
        problems += _network_problems(decl.id, decl.type, decl.config, registry, policy)
        problems += _sandbox_problems(decl, registry, config)
        for path, ref in _callable_refs(decl.type, decl.config, registry):
            key = (decl.id, path)
            module = ref.partition(":")[0]
            if config.module_allowed(module):
                allowed_refs.add(key)
            else:
                refused_refs[key] = ref
    problems += path_problems
    try:
        graph = validate(
            workflow,
            registry,
            allow_callables=not refused_refs,
            max_cel_cost=config.max_cel_cost,
        )
    except WorkflowValidationError as exc:
        problems += _with_policy(exc.problems, allowed_refs, refused_refs, config)
        raise WorkflowValidationError(problems, exc.source) from None
    if problems:
        raise WorkflowValidationError(problems)
    return graph


def _network_problems(
    node_id: str,
    type_id: str,
    raw: dict[str, Any],
    registry: NodeRegistry,
    policy: NetPolicy,
) -> list[Problem]:
    """The URLs and listening addresses of a node's config the policy refuses."""
    try:
        config = registry.get(type_id).decode_config(raw)
    except (UnknownNodeType, ValueError, TypeError):
        return []  # validation reports these
    if config is None:
        return []
    problems = []
    for found in resource_fields(config):
        try:
            if found.kind == "url":
                host, port = url_host_port(found.value)
                policy.check_host(host, port)
            elif found.kind == "listen":
                policy.check_listen(found.value)
        except NetworkDenied as exc:
            problems.append(
                Problem(str(exc), node=node_id, field=f"config.{found.path}")
            )
    return problems


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


def _sandbox_problems(
    decl: WorkflowNode, registry: NodeRegistry, server: ServerConfig
) -> list[Problem]:
    """What a sandboxed node asks for beyond the server's rules for uploads."""
    try:
        config = registry.get(decl.type).decode_config(decl.config)
    except (UnknownNodeType, ValueError, TypeError):
        return []  # validation reports these
    if not isinstance(config, SandboxedConfig):
        return []
    found: list[tuple[str, str]] = [
        (
            field,
            f"{path!r} is a path on the server, which uploaded workflows may not "
            "name; send the module inline as 'base64:' followed by its bytes"
            if field == "module"
            else f"{path!r} is a path on the server, which uploaded workflows "
            "may not name",
        )
        for field, path in config.host_paths()
    ]
    limits = config.limits
    refused = [g for g in limits.wasi if g not in UPLOAD_GRANTS]
    if refused:
        found.append(
            (
                "limits.wasi",
                f"this server never grants {', '.join(refused)} to uploaded "
                f"workflows (it may grant: {', '.join(UPLOAD_GRANTS)})",
            )
        )
    if limits.time_limit_ms > server.sandbox_time_limit_ms:
        found.append(
            (
                "limits.time_limit_ms",
                f"time_limit_ms {limits.time_limit_ms:g} is over this server's "
                f"ceiling of {server.sandbox_time_limit_ms:g}",
            )
        )
    if limits.memory_pages > server.sandbox_memory_pages:
        found.append(
            (
                "limits.memory_pages",
                f"memory_pages {limits.memory_pages} is over this server's "
                f"ceiling of {server.sandbox_memory_pages}",
            )
        )
    return [Problem(m, node=decl.id, field=f"config.{f}") for f, m in found]


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
