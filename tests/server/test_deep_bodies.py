"""Request bodies nested thousands of levels deep: a 400 problem, never a 500."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .conftest import AUTH

if TYPE_CHECKING:
    import httpx

WORKFLOW = b"""{"name": "w", "nodes": [
  {"id": "v", "type": "source.values", "config": {"values": [1]}},
  {"id": "out", "type": "sink.collect"}], "connections": ["v -> out"]}"""


def deep_json(depth: int) -> bytes:
    return b'{"name": "w", "x": ' + b"[" * depth + b"]" * depth + b"}"


# 100,000 levels: a parser quadratic in the depth would hold the server (and
# this test) for hours.
@pytest.mark.parametrize("depth", [5000, 10000, 100_000])
@pytest.mark.parametrize(
    ("media", "body"),
    [
        ("application/json", deep_json),
        ("application/yaml", lambda d: b"name: w\nx: " + b"[" * d + b"]" * d),
    ],
)
async def test_a_deep_workflow_upload_is_a_400(
    client: httpx.AsyncClient, depth: int, media: str, body: object
) -> None:
    make = body if callable(body) else None
    assert make is not None
    response = await client.put(
        "/api/workflows/w", content=make(depth), headers={**AUTH, "content-type": media}
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert "nest" in problem["detail"], problem


@pytest.mark.parametrize("depth", [5000, 10000])
async def test_a_deep_run_request_is_a_400(
    client: httpx.AsyncClient, depth: int
) -> None:
    stored = await client.put(
        "/api/workflows/w",
        content=WORKFLOW,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert stored.status_code == 200, stored.text
    body = b'{"inputs": {"v": ' + b"[" * depth + b"]" * depth + b"}}"
    response = await client.post(
        "/api/workflows/w/runs",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text


async def test_a_yaml_upload_with_an_alias_is_a_400(client: httpx.AsyncClient) -> None:
    body = b"""name: w
base: &laugh [ha, ha]
nodes:
  - {id: v, type: source.values, config: {values: *laugh}}
  - {id: out, type: sink.collect}
connections: ["v -> out"]
"""
    response = await client.put(
        "/api/workflows/w",
        content=body,
        headers={**AUTH, "content-type": "application/yaml"},
    )
    assert response.status_code == 400, response.text
    assert "aliases" in response.json()["detail"]
