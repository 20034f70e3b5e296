"""schemathesis against the OpenAPI document: no 5xx, no schema violations.

The document is the app's own (built without starting it); the cases go to a
real server on 127.0.0.1. Bounded: a few examples per operation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flowstream.server import ServerConfig, create_app
from flowstream.server.openapi import finish_document

from .conftest import AUTH, NUMBERS, make_config, running_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .conftest import LiveServer

_app = create_app(ServerConfig(token="unused", db=":memory:"))
_document = finish_document(_app.openapi_schema.to_schema())
schema = schemathesis.openapi.from_dict(_document)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(tmp_path_factory.mktemp("openapi"), max_runs=64)
    with running_server(config) as live:
        r = httpx.put(f"{live.url}/api/workflows/numbers", json=NUMBERS, headers=AUTH)
        r.raise_for_status()
        yield live


def test_the_served_document_is_the_one_tested(server: LiveServer) -> None:
    served = httpx.get(f"{server.url}/openapi.json").json()
    assert served == _document
    assert httpx.get(f"{server.url}/schema/openapi.json").json() == _document


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any, server: LiveServer) -> None:
    # Responses must match the document (status, content type, headers and
    # body schema), bad requests must be refused, and valid ones accepted,
    # except a workflow upload: a workflow can fit the document's schema and
    # still be invalid (an unknown node type, a cycle), the documented 422.
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    if (case.method, case.path) != ("PUT", "/api/workflows/{name}"):
        checks.append(positive_data_acceptance)
    case.call_and_validate(base_url=server.url, headers=AUTH, checks=checks)


def test_the_document_agrees_with_the_server(server: LiveServer) -> None:
    # Three places where they disagreed (issue 11).
    schemas = _document["components"]["schemas"]
    runs = f"{server.url}/api/workflows/numbers/runs"
    # 1. The run body is optional, and declared so.
    post = _document["paths"]["/api/workflows/{name}/runs"]["post"]
    assert post["requestBody"]["required"] is False
    assert httpx.post(runs, headers=AUTH).status_code == 201
    # 2. Unknown body fields are refused, and declared so.
    assert schemas["RunRequest"]["additionalProperties"] is False
    assert httpx.post(runs, json={"extra": 1}, headers=AUTH).status_code == 400
    assert schemas["WorkflowNode"]["additionalProperties"] is False
    # 3. The server runs dataflows only: no routed mode, no routes.
    upload = schemas["WorkflowDocument"]
    assert upload["additionalProperties"] is False
    assert "routed" not in upload["properties"]["mode"]["enum"]
    assert not {"routes", "entry", "max_steps"} & set(upload["properties"])
    doc = {**NUMBERS, "name": "routed", "routes": ["numbers -> double"]}
    r = httpx.put(f"{server.url}/api/workflows/routed", json=doc, headers=AUTH)
    assert r.status_code == 422
    # 4. Times are ISO 8601 strings (UTC, ms), declared so (issue 17).
    started = schemas["RunSummary"]["properties"]["started_at"]
    assert (started["type"], started["format"]) == ("string", "date-time")
    ended = schemas["RunDetail"]["properties"]["ended_at"]["oneOf"]
    assert {"type": "null"} in ended
    pattern = re.compile(started["pattern"])
    run = httpx.get(f"{server.url}/api/runs", headers=AUTH).json()[0]
    assert pattern.match(run["started_at"]), run
    (wf,) = [
        w
        for w in httpx.get(f"{server.url}/api/workflows", headers=AUTH).json()
        if w["name"] == "numbers"
    ]
    assert pattern.match(wf["updated_at"]), wf
