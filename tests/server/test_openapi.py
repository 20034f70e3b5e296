"""schemathesis against the OpenAPI document: no 5xx, no schema violations.

The document is the app's own (built without starting it); the cases go to a
real server on 127.0.0.1. Bounded: a few examples per operation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from flowstream.server import ServerConfig, create_app
from flowstream.server.routes import finish_document

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
    # A workflow can fit the document's schema and still be invalid (an
    # unknown node type, a cycle): that is the documented 422, so "valid data
    # must be accepted" does not hold here; every other check runs.
    case.call_and_validate(
        base_url=server.url, headers=AUTH, excluded_checks=[positive_data_acceptance]
    )
