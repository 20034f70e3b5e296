"""The REST endpoints: node types, workflows, runs, health, metrics, the UI.

Paths are part of the product (issue 8):

    GET    /api/health                  the server is up
    GET    /api/nodes                   node types with ports and config schema
    GET    /api/workflows               stored workflows
    PUT    /api/workflows/{name}        store a workflow (200) or list its
                                        problems (422)
    GET    /api/workflows/{name}        one workflow
    DELETE /api/workflows/{name}        forget it (its runs stay)
    POST   /api/workflows/{name}/runs   start a run (201 {"run_id": ...})
    GET    /api/runs                    runs, latest first
    GET    /api/runs/{run_id}           status, per-node stats, outputs
                                        (recent ones while it runs)
    GET    /api/runs/{run_id}/series    each node's samples, last 5 minutes
    GET    /api/runs/{run_id}/checkpoints  its checkpoint store's epochs
    POST   /api/runs/{run_id}/stop      drain gracefully
    POST   /api/runs/{run_id}/cancel    cancel now
    GET    /metrics                     Prometheus exposition
    GET    /openapi.json                the OpenAPI document
    GET    /                            the web UI

The events feed (``WS /api/runs/{run_id}/events``) is in `flowstream.server.ws`;
what the handlers share (`ServerContext`) in `flowstream.server.context`, the
token guard in `flowstream.server.auth`, and how the OpenAPI document is
finished in `flowstream.server.openapi`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import yaml
from litestar import (
    HttpMethod,
    MediaType,
    Request,
    Response,
    delete,
    get,
    post,
    put,
    route,
)
from litestar.params import JSONBody, PathParameter, QueryParameter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..core.codec import decode_document, yaml_loader
from ..core.sandbox import SandboxedConfig
from ..core.workflow import Workflow
from ..core.workflow_files import parse_workflow
from ..errors import DecodeError, Problem, WorkflowValidationError
from .checkpoints import checkpoint_states
from .config import UPLOAD_GRANTS
from .context import server
from .openapi import UploadOperation, finish_document
from .policy import check_workflow
from .problems import ApiError, problem_responses
from .schemas import (
    CheckpointState,
    Health,
    NodeType,
    RunCreated,
    RunDetail,
    RunRequest,
    RunSummary,
    SandboxLimits,
    SeriesPoint,
    WorkflowSummary,
)
from .ui_files import ui_asset, ui_index

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

    from ..core.codec import DocumentFormat
    from ..runtime.registry import NodeRegistry
    from .config import ServerConfig

__all__ = [
    "describe_node_types",
    "route_handlers",
]

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
RUN_ID_PATTERN = r"^[0-9a-f]{1,64}$"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

WorkflowName = Annotated[
    str,
    PathParameter(
        pattern=NAME_PATTERN,
        description="Letters, digits, '_', '.' and '-'; at most 128.",
    ),
]
RunId = Annotated[str, PathParameter(pattern=RUN_ID_PATTERN)]

_CONTENT_TYPES: dict[str, DocumentFormat] = {
    "application/json": "json",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
}


# --- server ------------------------------------------------------------------

_ALL = problem_responses(401)


@get("/api/health", tags=["server"], responses=_ALL)
async def health(request: Request[Any, Any, Any]) -> Health:
    """Report that the server is up."""
    ctx = server(request)
    return Health(
        status="ok",
        version=__version__,
        active_runs=ctx.runs.active,
        auth_required_for_reads=not ctx.config.loopback,
    )


@get("/api/nodes", tags=["nodes"], responses=_ALL)
async def list_nodes(request: Request[Any, Any, Any]) -> list[NodeType]:
    """List the node types with their ports and config schema."""
    return server(request).node_types


def describe_node_types(registry: NodeRegistry, config: ServerConfig) -> list[NodeType]:
    """`NodeType` records for every type in the registry."""
    types = []
    for spec in registry:
        schema: dict[str, Any] | None = None
        if spec.config_type is not None:
            try:
                schema = msgspec.json.schema(spec.config_type)
            except (TypeError, ValueError):
                schema = {}  # a config type with no JSON Schema form
        types.append(
            NodeType(
                type=spec.type_id,
                description=spec.description,
                inputs=list(spec.inputs),
                outputs=list(spec.outputs),
                dynamic_ports=spec.ports is not None,
                needs_end_of_input=spec.needs_end,
                config_schema=schema,
                allowed=config.node_type_allowed(spec.type_id),
                limits=_sandbox_limits(spec.config_type, config),
            )
        )
    return types


def _sandbox_limits(config_type: Any, config: ServerConfig) -> SandboxLimits | None:
    if not (isinstance(config_type, type) and issubclass(config_type, SandboxedConfig)):
        return None
    return SandboxLimits(
        time_limit_ms=config.sandbox_time_limit_ms,
        memory_pages=config.sandbox_memory_pages,
        wasi=list(UPLOAD_GRANTS),
    )


# --- workflows ---------------------------------------------------------------


@route(
    "/api/workflows/{name:str}",
    http_method=[HttpMethod.OPTIONS],
    include_in_schema=False,
    opt={"public": True},
    sync_to_thread=False,
)
def workflow_options() -> Response[None]:
    """List the methods of a workflow's path.

    Litestar's own OPTIONS handler lists only the methods of the first handler
    registered for a path, so the one path with several handlers has its own
    (registered first).
    """
    return Response(
        None, status_code=204, headers={"Allow": "DELETE, GET, OPTIONS, PUT"}
    )


@get("/api/workflows", tags=["workflows"], responses=_ALL)
async def list_workflows(request: Request[Any, Any, Any]) -> list[WorkflowSummary]:
    """List the stored workflows."""
    return server(request).store.list_workflows()


@put(
    "/api/workflows/{name:str}",
    tags=["workflows"],
    status_code=200,
    security=BEARER,
    operation_class=UploadOperation,
    responses=problem_responses(400, 401, 413, 415, 422),
)
async def put_workflow(request: Request[Any, Any, Any], name: WorkflowName) -> Workflow:
    """Validate and store a workflow under its name.

    Answers 422 with every problem found (what ``flowstream validate``
    prints), each naming its node and field.
    """
    ctx = server(request)
    media = request.headers.get("content-type", "application/json")
    fmt = _CONTENT_TYPES.get(media.partition(";")[0].strip().lower())
    if fmt is None:
        known = ", ".join(_CONTENT_TYPES)
        raise ApiError(415, f"send the workflow as one of: {known}")
    body = await request.body()
    if fmt == "yaml":
        _refuse_yaml_aliases(body)
    try:
        raw = decode_document(body, fmt)
    except DecodeError as exc:
        raise ApiError(400, str(exc)) from None
    workflow = parse_workflow(raw)
    if workflow.name != name:
        problem = Problem(
            f"the document is named {workflow.name!r} but was sent to {name!r}",
            field="name",
        )
        raise WorkflowValidationError([problem])
    check_workflow(workflow, ctx.registry, ctx.config)
    # YAML is kept as sent, comments and all, for the UI's editor.
    source = body.decode("utf-8", "replace") if fmt == "yaml" else None
    ctx.store.put_workflow(workflow, source)
    return workflow


def _refuse_yaml_aliases(body: bytes) -> None:
    # Aliases let a small document expand exponentially while it is converted
    # (a "billion laughs"); workflow files have no use for them. The loader
    # documents are read with (libyaml's): PyYAML's own scanner is quadratic
    # in the nesting of flow collections (10 KB of brackets held it 30 s).
    try:
        for event in yaml.parse(body, Loader=yaml_loader()):
            if isinstance(event, yaml.AliasEvent):
                msg = "YAML aliases (*name) are not accepted in uploaded workflows"
                raise ApiError(400, msg)
    except yaml.YAMLError as exc:
        raise ApiError(400, f"invalid YAML: {exc}") from None


@get(
    "/api/workflows/{name:str}",
    tags=["workflows"],
    responses=problem_responses(400, 401, 404),
)
async def get_workflow(request: Request[Any, Any, Any], name: WorkflowName) -> Workflow:
    """Return a stored workflow."""
    workflow = server(request).store.get_workflow(name)
    if workflow is None:
        raise ApiError(404, f"no workflow {name!r}")
    return workflow


@get(
    "/api/workflows/{name:str}/source",
    tags=["workflows"],
    media_type="application/yaml",
    responses=problem_responses(400, 401, 404),
    sync_to_thread=False,
)
def get_workflow_source(
    request: Request[Any, Any, Any], name: WorkflowName
) -> Response[bytes]:
    """Return a stored workflow as YAML text, for an editor.

    A workflow uploaded as YAML comes back exactly as it was sent, comments
    included; one uploaded as JSON comes back converted to YAML.
    """
    store = server(request).store
    source = store.workflow_source(name)
    if source is not None:
        return Response(source.encode(), media_type="application/yaml")
    workflow = store.get_workflow(name)
    if workflow is None:
        raise ApiError(404, f"no workflow {name!r}")
    return Response(msgspec.yaml.encode(workflow), media_type="application/yaml")


@delete(
    "/api/workflows/{name:str}",
    tags=["workflows"],
    security=BEARER,
    responses=problem_responses(400, 401, 404),
)
async def delete_workflow(request: Request[Any, Any, Any], name: WorkflowName) -> None:
    """Delete a stored workflow; its run records stay."""
    if not server(request).store.delete_workflow(name):
        raise ApiError(404, f"no workflow {name!r}")


@post(
    "/api/workflows/{name:str}/runs",
    tags=["runs"],
    status_code=201,
    security=BEARER,
    responses=problem_responses(400, 401, 404, 413, 422, 429),
)
async def start_run(
    request: Request[Any, Any, Any],
    name: WorkflowName,
    data: JSONBody[RunRequest | None] = None,
) -> RunCreated:
    """Start a run of a stored workflow.

    The body is optional: ``mode`` overrides the workflow's, ``inputs``
    gives ``source.values`` nodes new values for this run.
    """
    ctx = server(request)
    workflow = ctx.store.get_workflow(name)
    if workflow is None:
        raise ApiError(404, f"no workflow {name!r}")
    live = ctx.runs.start(workflow, data or RunRequest())
    s = live.summary
    return RunCreated(
        run_id=s.run_id, workflow=s.workflow, mode=s.mode, status=s.status
    )


# --- runs --------------------------------------------------------------------


@get("/api/runs", tags=["runs"], responses=problem_responses(400, 401))
async def list_runs(
    request: Request[Any, Any, Any],
    workflow: Annotated[str | None, QueryParameter(pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> list[RunSummary]:
    """List runs, the latest first, optionally of one workflow."""
    return server(request).store.list_runs(workflow, limit)


@get(
    "/api/runs/{run_id:str}/checkpoints",
    tags=["runs"],
    responses=problem_responses(400, 401, 404),
)
async def get_run_checkpoints(
    request: Request[Any, Any, Any], run_id: RunId
) -> list[CheckpointState]:
    """What the checkpoint store of the run's workflow holds of it.

    Empty for a workflow without checkpoints. Each entry is a run of the
    workflow the store knows: last epoch, last commit, restores, positions.
    """
    ctx = server(request)
    detail = ctx.runs.detail(run_id)
    if detail.graph is None:
        return []
    try:
        return await checkpoint_states(detail.graph, ctx.config)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


@get(
    "/api/runs/{run_id:str}/series",
    tags=["runs"],
    responses=problem_responses(400, 401, 404),
    sync_to_thread=False,
)
def get_run_series(
    request: Request[Any, Any, Any], run_id: RunId
) -> dict[str, list[SeriesPoint]]:
    """Each node's samples of a running run, over the last five minutes.

    One point per sample (rates, channel fill, errors, event-time lag), the
    oldest first: what the UI's charts draw, so a page opened mid-run starts
    with the run's recent past. Empty once the run has ended.
    """
    return server(request).runs.series(run_id)


@get(
    "/api/runs/{run_id:str}", tags=["runs"], responses=problem_responses(400, 401, 404)
)
async def get_run(request: Request[Any, Any, Any], run_id: RunId) -> RunDetail:
    """A run's status and per-node stats; for a finished run, its outputs."""
    return server(request).runs.detail(run_id)


@post(
    "/api/runs/{run_id:str}/stop",
    tags=["runs"],
    status_code=202,
    security=BEARER,
    responses=problem_responses(400, 401, 404, 409),
)
async def stop_run(request: Request[Any, Any, Any], run_id: RunId) -> RunSummary:
    """Stop a run gracefully: sources end, in-flight items drain."""
    return server(request).runs.stop(run_id)


@post(
    "/api/runs/{run_id:str}/cancel",
    tags=["runs"],
    status_code=202,
    security=BEARER,
    responses=problem_responses(400, 401, 404, 409),
)
async def cancel_run(request: Request[Any, Any, Any], run_id: RunId) -> RunSummary:
    """Cancel a run now."""
    return server(request).runs.cancel(run_id)


# --- metrics, the OpenAPI document, the UI -----------------------------------


@get(
    "/metrics",
    tags=["server"],
    media_type=MediaType.TEXT,
    responses=_ALL,
    sync_to_thread=False,
)
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Prometheus metrics, in the text exposition format."""
    body = generate_latest(server(request).metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@get("/openapi.json", include_in_schema=False, sync_to_thread=False)
def openapi_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The OpenAPI document (also at /schema/openapi.json)."""
    doc = finish_document(request.app.openapi_schema.to_schema())
    return Response(msgspec.json.encode(doc), media_type=MediaType.JSON)


def route_handlers() -> list[ControllerRouterHandler]:
    """Every HTTP handler of the app (the WebSocket one is added by the app)."""
    return [
        workflow_options,  # before the path's other handlers: see its docstring
        health,
        list_nodes,
        list_workflows,
        put_workflow,
        get_workflow,
        get_workflow_source,
        delete_workflow,
        start_run,
        list_runs,
        get_run,
        get_run_checkpoints,
        get_run_series,
        stop_run,
        cancel_run,
        metrics,
        openapi_document,
        ui_index,
        ui_asset,
    ]
