"""The OpenAPI document as served: Litestar's, finished to say what the API does.

Litestar generates the document from the handlers' types; `finish_document`
adds what no msgspec type says (structs that refuse unknown fields, the
workflow upload's string shorthand for connections, the optional run body,
ISO 8601 times), and `UploadOperation` declares the upload's body, which the
handler reads raw. `DocumentPlugin` serves the finished document at
Litestar's path; ``/openapi.json`` serves the same (`flowstream.server.routes`).
"""

from __future__ import annotations

import copy
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody

from ..core.workflow import Workflow
from .schemas import RunRequest

if TYPE_CHECKING:
    from litestar import Request

__all__ = ["DocumentPlugin", "UploadOperation", "finish_document"]


def _upload_body() -> RequestBody:
    ref = Reference(ref="#/components/schemas/Workflow")  # see finish_document
    return RequestBody(
        required=True,
        description=(
            "A workflow document, as a workflow file holds it (JSON or YAML); "
            "its name must be the one in the path. Connections and routes may "
            "be written as strings: 'a -> b.in'."
        ),
        content={
            "application/json": OpenAPIMediaType(schema=ref),
            "application/yaml": OpenAPIMediaType(schema=ref),
        },
    )


@dataclass
class UploadOperation(Operation):
    """The workflow upload's operation, with its body's schema declared.

    The body is read raw, to report every problem at once (Litestar's own
    decoding stops at the first); so its schema is declared here.
    """

    def __post_init__(self) -> None:
        self.request_body = _upload_body()


def finish_document(generated: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as served: Litestar's, made to say what we do.

    * Structs that refuse unknown fields say so (``additionalProperties:
      false``), which Litestar leaves out.
    * An uploaded workflow is a `Workflow` whose connections may also be
      strings (the file shorthand), which no msgspec type says; the upload's
      body is declared as ``WorkflowDocument``, a copy of ``Workflow`` that
      allows them and leaves out the routed mode and its fields (the server
      runs dataflows only).
    * Starting a run takes an optional body (Litestar marks it required).
    * Times are ISO 8601 strings (``format: date-time``, UTC, milliseconds).
    """
    doc = copy.deepcopy(generated)
    schemas = doc["components"]["schemas"]
    for name, cls in _structs(Workflow, RunRequest).items():
        if name in schemas and cls.__struct_config__.forbid_unknown_fields:
            schemas[name]["additionalProperties"] = False
    upload = copy.deepcopy(schemas["Workflow"])
    upload["title"] = "WorkflowDocument"
    for routed in _ROUTED_ONLY:
        upload["properties"].pop(routed)
    upload["properties"]["mode"]["enum"] = ["dag", "stream"]
    prop = upload["properties"]["connections"]
    text = {"type": "string", "description": "the shorthand 'a -> b.in'"}
    prop["items"] = {"oneOf": [text, prop["items"]]}
    schemas["WorkflowDocument"] = upload
    body = doc["paths"]["/api/workflows/{name}"]["put"]["requestBody"]
    for media in body["content"].values():
        media["schema"] = {"$ref": "#/components/schemas/WorkflowDocument"}
    doc["paths"]["/api/workflows/{name}/runs"]["post"]["requestBody"]["required"] = (
        False
    )
    for name, fields in _TIMES.items():
        for field in fields:
            prop = schemas[name]["properties"][field]
            for option in prop.get("oneOf", [prop]):
                if option.get("type") == "string":
                    option["format"] = "date-time"
                    option["pattern"] = _ISO_PATTERN
    return doc


# Where the API gives times (`schemas.iso`), and their exact form.
_TIMES = {
    "RunSummary": ("started_at", "ended_at"),
    "RunDetail": ("started_at", "ended_at"),
    "WorkflowSummary": ("created_at", "updated_at"),
}
_ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


# Workflow fields of the routed mode, which the server does not run.
_ROUTED_ONLY = ("routes", "entry", "max_steps")


def _structs(*roots: type[msgspec.Struct]) -> dict[str, type[msgspec.Struct]]:
    """Every struct type reachable from ``roots`` through their fields."""
    found: dict[str, type[msgspec.Struct]] = {}
    todo: list[Any] = list(roots)
    while todo:
        hint = todo.pop()
        if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
            if hint.__name__ in found:
                continue
            found[hint.__name__] = hint
            todo.extend(typing.get_type_hints(hint).values())
        else:
            todo.extend(typing.get_args(hint))
    return found


class DocumentPlugin(JsonRenderPlugin):
    """Serves the finished document at /schema/openapi.json (Litestar's path)."""

    def render(
        self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]
    ) -> bytes:
        """Return the finished document as JSON."""
        return super().render(request, finish_document(openapi_schema))
