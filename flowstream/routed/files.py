"""Routed workflow files: a `Workflow` with ``mode: routed`` becomes a `Flow`.

::

    name: login
    mode: routed
    entry: start            # optional: the first node by default
    max_steps: 50           # optional
    nodes:
      - {id: start, type: step.set, config: {values: {attempts: "0"}}}
      - id: login
        type: examples.routed_steps:CheckPassword   # a Python step class
        retry: {max_attempts: 3, delay_ms: 10}
        on_error: locked
      - ...
    routes:
      - start -> login
      - login -> welcome

A node's ``type`` is a registered step type (``step.set``, ``step.branch``,
``step.complete``, ``step.run_workflow``, or one from a pack under the
``flowstream.steps`` entry points) or ``"module:attr"`` naming a Python step:
a class (made with the node's ``config`` as keyword arguments), a step object,
an async function of ``ctx``, or a `NodeSpec` made with ``@node``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.codec import DOCUMENT_FORMATS
from ..core.expr import ExprError, compile_expr, expr_fields, import_ref
from ..core.node import NodeSpec
from ..core.workflow import Workflow
from ..core.workflow_files import describe_validation_error, read_workflow
from ..errors import Problem, UnknownNodeType, WorkflowValidationError
from .flow import Flow
from .steps import step_registry

if TYPE_CHECKING:
    from pathlib import Path

    from ..core.workflow import WorkflowNode
    from ..runtime.registry import NodeRegistry

__all__ = ["flow_from_workflow", "load_flow", "read_flow"]


def read_flow(path: str | Path, *, steps: NodeRegistry | None = None) -> Flow:
    """Read a routed workflow file into a `Flow`.

    Raises:
        DecodeError: The file is not a valid document.
        WorkflowValidationError: Lists every problem, naming the file.
        OSError: The file cannot be read.
    """
    return flow_from_workflow(read_workflow(path), steps=steps, source=str(path))


def load_flow(ref: str, *, steps: NodeRegistry | None = None) -> Flow:
    """Return the flow a reference names: a workflow file or ``"module:attr"``.

    ``module:attr`` may name a `Flow` or a routed `Workflow`.

    Raises:
        DecodeError, WorkflowValidationError, OSError: As for `read_flow`.
        ExprError: The reference does not resolve.
        TypeError: It resolves to something else.
    """
    if any(ref.lower().endswith(suffix) for suffix in DOCUMENT_FORMATS):
        return read_flow(ref, steps=steps)
    obj = import_ref(ref)
    if isinstance(obj, Flow):
        return obj
    if isinstance(obj, Workflow):
        return flow_from_workflow(obj, steps=steps, source=ref)
    msg = f"{ref!r} is a {type(obj).__name__}, not a Flow"
    raise TypeError(msg)


def flow_from_workflow(
    workflow: Workflow,
    *,
    steps: NodeRegistry | None = None,
    source: str | None = None,
    allow_callables: bool = True,
) -> Flow:
    """Build a `Flow` from a routed workflow, checking everything at once.

    Args:
        workflow: A workflow with ``mode: routed``.
        steps: Where step types are looked up (`step_registry` if None).
        source: A file name to put in the error.
        allow_callables: Whether ``"module:attr"`` types may be imported.

    Raises:
        WorkflowValidationError: Lists every problem, each naming its step.
    """
    problems: list[Problem] = []
    if workflow.mode != "routed":
        problems.append(
            Problem(
                f"mode is {workflow.mode!r}; a routed flow needs mode: routed",
                field="mode",
            )
        )
    if workflow.connections:
        problems.append(
            Problem(
                "a routed workflow joins its steps with routes, not connections",
                field="connections",
            )
        )
    if workflow.error_handling is not None:
        problems.append(
            Problem(
                "steps fail with retry and on_error, not error_handling",
                field="error_handling",
            )
        )
    registry = steps if steps is not None else step_registry()
    builder = Flow.builder(workflow.name)
    invalid: list[str] = []
    for decl in workflow.nodes:
        if decl.error_handling is not None:
            problems.append(
                Problem(
                    "steps fail with retry and on_error, not error_handling",
                    node=decl.id,
                    field="error_handling",
                )
            )
        made = _make_step(decl, registry, problems, allow_callables)
        if made is None:
            invalid.append(decl.id)
            continue
        step, type_id = made
        builder.add_node(
            decl.id, step, retry=decl.retry, on_error=decl.on_error, type_id=type_id
        )
    for route in workflow.routes:
        builder.add_route(route.from_node, route.to_node)
    entry = workflow.entry or (workflow.nodes[0].id if workflow.nodes else None)
    if entry is not None:
        builder.entry(entry)
    if workflow.max_steps is not None:
        builder.max_steps(workflow.max_steps)
    flow, found = builder.check(known=invalid)
    problems += found
    if problems:
        raise WorkflowValidationError(problems, source)
    assert flow is not None
    return flow


def _make_step(
    decl: WorkflowNode,
    registry: NodeRegistry,
    problems: list[Problem],
    allow_callables: bool,
) -> tuple[Any, str | None] | None:
    """Return the step a node declares and its type id (None: the default).

    Returns None after adding the node's problems.
    """

    def problem(message: str, field: str) -> None:
        problems.append(Problem(message, node=decl.id, field=field))

    spec: NodeSpec
    if ":" in decl.type:
        if not allow_callables:
            problem("Python steps ('module:attr') are not allowed here", "type")
            return None
        try:
            obj = import_ref(decl.type)
        except ExprError as exc:
            problem(str(exc), "type")
            return None
        if isinstance(obj, NodeSpec):
            spec = obj
        elif inspect.isclass(obj):
            try:
                return obj(**decl.config), None
            except Exception as exc:
                problem(f"cannot make {decl.type} from this config: {exc}", "config")
                return None
        elif inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
            getattr(obj, "execute", None)
        ):
            if decl.config:
                problem(f"{decl.type} is a step object; it takes no config", "config")
                return None
            return obj, None
        else:
            problem(f"{decl.type} is a {type(obj).__name__}, not a step", "type")
            return None
    else:
        try:
            spec = registry.get(decl.type)
        except UnknownNodeType as exc:
            problem(str(exc), "type")
            return None
    try:
        config = spec.decode_config(decl.config)
    except msgspec.ValidationError as exc:
        message, path = describe_validation_error(exc)
        problem(message, f"config.{path}" if path else "config")
        return None
    if config is not None:
        names = {f.name: f.encode_name for f in msgspec.structs.fields(type(config))}
        bad = False
        for path, kind, text in expr_fields(config):
            if kind != "cel":
                continue
            head, sep, rest = path.partition(".")
            shown = names.get(head, head) + sep + rest
            try:
                compile_expr(text)
            except ExprError as exc:
                problem(str(exc), f"config.{shown}")
                bad = True
        if bad:
            return None
    try:
        return spec.create(config), spec.type_id
    except WorkflowValidationError as exc:
        where = f"{exc.source}: " if exc.source else ""
        for inner in exc.problems:
            problem(f"{where}{inner}", "config")
    except (ValueError, TypeError, OSError) as exc:
        problem(str(exc), "config")
    return None
