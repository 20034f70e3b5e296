"""The REST API in-process: workflows, validation, runs, auth, errors, restarts."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner

from flowstream import Workflow
from flowstream.cli import cli
from flowstream.server import create_app
from flowstream.server.schemas import RunSummary
from flowstream.server.store import Store

from .conftest import (
    AUTH,
    NUMBERS,
    NUMBERS_OUT,
    TICKS,
    TOKEN,
    finished,
    make_config,
    open_client,
    wait_for_run,
)

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from flowstream.server import ServerConfig

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status
    assert doc["title"]
    assert "Traceback" not in r.text
    return doc


async def put(client: httpx.AsyncClient, doc: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/api/workflows/{doc['name']}", json=doc, headers=AUTH)


async def start(client: httpx.AsyncClient, name: str, **body: Any) -> str:
    r = await client.post(f"/api/workflows/{name}/runs", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    run_id: str = r.json()["run_id"]
    return run_id


# --- basics ----------------------------------------------------------------------


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["auth_required_for_reads"] is False
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path in (
        "/api/nodes",
        "/api/workflows",
        "/api/workflows/{name}",
        "/api/workflows/{name}/runs",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/stop",
        "/api/runs/{run_id}/cancel",
        "/metrics",
    ):
        assert path in paths, path
    put_op = paths["/api/workflows/{name}"]["put"]
    assert put_op["security"] == [{"bearer": []}]
    assert "422" in put_op["responses"]
    assert "application/json" in put_op["requestBody"]["content"]


async def test_nodes_have_ports_and_config_schema(client: httpx.AsyncClient) -> None:
    nodes = {n["type"]: n for n in (await client.get("/api/nodes")).json()}
    m = nodes["transform.map"]
    assert m["inputs"] == ["in"]
    assert "out" in m["outputs"]
    assert "error" in m["outputs"]
    assert "expr" in json.dumps(m["config_schema"])
    assert nodes["sink.null"]["config_schema"] is None
    assert nodes["file.sink"]["allowed"] is False
    assert nodes["source.timer"]["allowed"] is True


async def test_ui_is_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "/ui/vendor/dagre.min.js" in r.text
    for asset in ("/ui/app.js", "/ui/style.css", "/ui/vendor/dagre.min.js"):
        assert (await client.get(asset)).status_code == 200, asset
    assert_problem(await client.get("/ui/../server/app.py"), 404)
    assert_problem(await client.get("/ui/secret.txt"), 404)


# --- workflows -----------------------------------------------------------------


async def test_put_get_list_delete_workflow(client: httpx.AsyncClient) -> None:
    r = await put(client, NUMBERS)
    assert r.status_code == 200, r.text
    stored = r.json()
    assert stored["name"] == "numbers"
    assert stored["connections"][0] == {"from_node": "numbers", "to_node": "double"}
    assert (await client.get("/api/workflows/numbers")).json() == stored
    listed = (await client.get("/api/workflows")).json()
    assert [(w["name"], w["nodes"], w["connections"]) for w in listed] == [
        ("numbers", 4, 3)
    ]
    # Storing again replaces it.
    changed = {**NUMBERS, "description": "again"}
    assert (await put(client, changed)).json()["description"] == "again"
    assert len((await client.get("/api/workflows")).json()) == 1
    r = await client.delete("/api/workflows/numbers", headers=AUTH)
    assert r.status_code == 204
    assert_problem(await client.get("/api/workflows/numbers"), 404)
    assert_problem(await client.delete("/api/workflows/numbers", headers=AUTH), 404)


async def test_put_takes_yaml(client: httpx.AsyncClient) -> None:
    text = (
        "name: from-yaml\n"
        "nodes:\n"
        "  - {id: a, type: source.values, config: {values: [1, 2]}}\n"
        "  - {id: b, type: sink.collect}\n"
        "connections: [a -> b]\n"
    )
    r = await client.put(
        "/api/workflows/from-yaml",
        content=text,
        headers={**AUTH, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "from-yaml"


async def test_invalid_workflow_is_422_with_the_problems_the_cli_prints(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    broken = {
        "name": "broken",
        "nodes": [
            {"id": "numbers", "type": "source.range", "config": {"stop": "ten"}},
            {"id": "double", "type": "transform.mapp"},
            {"id": "a", "type": "transform.map", "config": {"expr": "x +"}},
            {"id": "b", "type": "transform.map", "config": {"expr": "x"}},
        ],
        "connections": ["numbers -> double", "a -> b", "b -> a"],
    }
    doc = assert_problem(await put(client, broken), 422)
    problems = doc["problems"]
    assert {p["node"] for p in problems} == {"numbers", "double", "a"}
    assert_problem(await client.get("/api/workflows/broken"), 404)

    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    printed = [line.strip() for line in result.stderr.splitlines()[1:]]

    def line(p: dict[str, Any]) -> str:
        where = [f"node {p['node']!r}"] if p.get("node") else []
        where += [p["field"]] if p.get("field") else []
        return f"{', '.join(where)}: {p['message']}" if where else p["message"]

    assert [line(p) for p in problems] == printed


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b"<xml/>", "application/xml", 415),
        (b"a: &x [1]\nb: *x\n", "application/yaml", 400),
        (b'{"name": "other", "nodes": []}', "application/json", 422),
        (b'{"nodes": []}', "application/json", 422),
    ],
)
async def test_bad_uploads_are_problems(
    client: httpx.AsyncClient, body: bytes, content_type: str, status: int
) -> None:
    r = await client.put(
        "/api/workflows/w",
        content=body,
        headers={**AUTH, "Content-Type": content_type},
    )
    assert_problem(r, status)


async def test_body_size_is_limited(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, max_body_bytes=1000))
    async with open_client(app) as client:
        big = {**NUMBERS, "description": "x" * 2000}
        assert_problem(await put(client, big), 413)
        assert (await put(client, NUMBERS)).status_code == 200


async def test_callables_need_the_module_allowlist(tmp_path: Path) -> None:
    nodes: list[dict[str, Any]] = [
        {"id": "src", "type": "source.values", "config": {"values": [1, 2, 3]}},
        {"id": "f", "type": "transform.map", "config": {"fn": "builtins:abs"}},
        {"id": "g", "type": "transform.map", "config": {"fn": "os:system"}},
        {"id": "out", "type": "sink.collect"},
    ]
    doc = {
        "name": "fn",
        "nodes": nodes,
        "connections": ["src -> f", "f -> g", "g -> out"],
    }
    app = create_app(make_config(tmp_path, allow_modules=("builtins",)))
    async with open_client(app) as client:
        problems = assert_problem(await put(client, doc), 422)["problems"]
        assert [(p["node"], p["field"]) for p in problems] == [("g", "config.fn")]
        assert "'os:system' is not allowed on this server" in problems[0]["message"]
        ok = {"name": "fn", "nodes": nodes[:2] + nodes[3:]}
        ok["connections"] = ["src -> f", "f -> out"]
        assert (await put(client, ok)).status_code == 200
        run_id = await start(client, "fn")
        detail = await wait_for_run(client, run_id, finished)
        assert detail["outputs"] == {"out": {"out": [1, 2, 3]}}
    # With no allowlist (the default), every callable is refused.
    async with open_client(create_app(make_config(tmp_path))) as client:
        problems = assert_problem(await put(client, ok), 422)["problems"]
        assert "builtins:abs" in problems[0]["message"]


async def test_node_types_by_reference_need_the_module_allowlist(
    tmp_path: Path,
) -> None:
    # A node type "module:attr" imports the module, as fn: "module:attr" does.
    doc = {
        "name": "ref",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1.0, 3.0]}},
            {"id": "mean", "type": "examples.my_nodes:running_mean"},
        ],
        "connections": ["src -> mean"],
    }
    async with open_client(create_app(make_config(tmp_path))) as client:
        problems = assert_problem(await put(client, doc), 422)["problems"]
        assert [(p["node"], p["field"]) for p in problems] == [("mean", "type")]
        assert (
            "'examples.my_nodes:running_mean' is not allowed" in problems[0]["message"]
        )
    config = make_config(tmp_path, allow_modules=("examples.my_nodes",))
    async with open_client(create_app(config)) as client:
        assert (await put(client, doc)).status_code == 200


async def test_node_types_that_reach_the_servers_files_are_refused(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    doc = {
        "name": "files",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1]}},
            {"id": "out", "type": "file.sink", "config": {"path": "/tmp/x.jsonl"}},
        ],
        "connections": ["src -> out"],
    }
    problems = assert_problem(await put(client, doc), 422)["problems"]
    assert problems[0]["node"] == "out"
    assert "--allow-node file.sink" in problems[0]["message"]


# --- runs ----------------------------------------------------------------------


async def test_dag_run_completes_with_outputs(client: httpx.AsyncClient) -> None:
    await put(client, NUMBERS)
    run_id = await start(client, "numbers")
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "completed"
    assert detail["outputs"] == {"result": {"out": NUMBERS_OUT}}
    assert detail["dead_letters"] == []
    assert detail["nodes"]["numbers"]["items_out"] == 10
    assert detail["nodes"]["result"]["items_in"] == len(NUMBERS_OUT)
    assert {n["state"] for n in detail["nodes"].values()} == {"completed"}
    assert detail["graph"]["name"] == "numbers"
    runs = (await client.get("/api/runs")).json()
    assert [r["run_id"] for r in runs] == [run_id]
    assert (await client.get("/api/runs", params={"workflow": "nope"})).json() == []


async def test_run_inputs_and_mode(client: httpx.AsyncClient) -> None:
    doc = {
        "name": "vals",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1]}},
            {"id": "inc", "type": "transform.map", "config": {"expr": "x + 1"}},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["src -> inc", "inc -> out"],
    }
    await put(client, doc)
    run_id = await start(client, "vals", inputs={"src": [10, 20]})
    detail = await wait_for_run(client, run_id, finished)
    assert detail["outputs"] == {"out": {"out": [11, 21]}}
    r = await client.post(
        "/api/workflows/vals/runs", json={"inputs": {"inc": [1]}}, headers=AUTH
    )
    assert assert_problem(r, 422)["problems"][0]["field"] == "inputs"
    r = await client.post(
        "/api/workflows/vals/runs", json={"mode": "sideways"}, headers=AUTH
    )
    assert_problem(r, 400)
    assert_problem(await client.post("/api/workflows/nope/runs", headers=AUTH), 404)


async def test_failed_run_names_the_node(client: httpx.AsyncClient) -> None:
    doc = {
        "name": "fails",
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1, 0]}},
            {"id": "div", "type": "transform.map", "config": {"expr": "10 / x"}},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["src -> div", "div -> out"],
    }
    await put(client, doc)
    run_id = await start(client, "fails")
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "failed"
    assert "div" in detail["error"]
    assert detail["nodes"]["div"]["state"] == "failed"
    assert detail["nodes"]["div"]["errors"] == 1


async def test_dead_letters_of_a_run_that_carries_on(client: httpx.AsyncClient) -> None:
    doc = {
        "name": "carries-on",
        "error_handling": {"mode": "continue_on_error"},
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1, 0, 2]}},
            {"id": "div", "type": "transform.map", "config": {"expr": "10 / x"}},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["src -> div", "div -> out"],
    }
    await put(client, doc)
    run_id = await start(client, "carries-on")
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "completed"
    assert detail["outputs"] == {"out": {"out": [10, 5]}}
    [letter] = detail["dead_letters"]
    assert (letter["node_id"], letter["item"]) == ("div", 0)
    div = detail["nodes"]["div"]
    assert (div["state"], div["errors"], div["dead_letters"]) == ("completed", 1, 1)


async def test_stream_run_stops_gracefully(client: httpx.AsyncClient) -> None:
    await put(client, TICKS)
    run_id = await start(client, "ticks")
    detail = await wait_for_run(
        client, run_id, lambda d: d["nodes"]["sink"]["items_in"] > 5
    )
    assert detail["status"] == "running"
    assert detail["nodes"]["tick"]["state"] == "running"
    r = await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
    assert r.status_code == 202
    assert r.json()["status"] == "stopping"
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "completed"
    nodes = detail["nodes"]
    assert nodes["tick"]["items_out"] == nodes["sink"]["items_in"] > 5
    assert nodes["sink"]["items_in"] == nodes["other"]["items_in"]
    assert_problem(await client.post(f"/api/runs/{run_id}/stop", headers=AUTH), 409)
    assert_problem(await client.post(f"/api/runs/{run_id}/cancel", headers=AUTH), 409)


async def test_a_second_stop_does_not_cancel(client: httpx.AsyncClient) -> None:
    await put(client, TICKS)
    run_id = await start(client, "ticks")
    await wait_for_run(client, run_id, lambda d: d["nodes"]["sink"]["items_in"] > 0)
    runs = client._transport.app.state.flowstream.runs  # type: ignore[attr-defined]
    # Back to back, before the drain can finish (the executor's own second
    # stop would cancel; the API's stop is idempotent).
    assert runs.stop(run_id).status == "stopping"
    assert runs.stop(run_id).status == "stopping"
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "completed"


async def test_stream_run_cancels(client: httpx.AsyncClient) -> None:
    await put(client, TICKS)
    run_id = await start(client, "ticks")
    await wait_for_run(client, run_id, lambda d: d["nodes"]["sink"]["items_in"] > 0)
    r = await client.post(f"/api/runs/{run_id}/cancel", headers=AUTH)
    assert r.status_code == 202
    detail = await wait_for_run(client, run_id, finished)
    assert detail["status"] == "cancelled"


async def test_unknown_runs(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/runs/0123abcd"), 404)
    assert_problem(await client.post("/api/runs/0123abcd/stop", headers=AUTH), 404)
    assert_problem(await client.get("/api/runs/NOT-HEX"), 400)


async def test_concurrent_runs_are_limited(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, max_runs=2))
    async with open_client(app) as client:
        await put(client, TICKS)
        first = [await start(client, "ticks") for _ in range(2)]
        r = await client.post("/api/workflows/ticks/runs", headers=AUTH)
        assert_problem(r, 429)
        assert r.headers["retry-after"] == "1"
        await client.post(f"/api/runs/{first[0]}/cancel", headers=AUTH)
        await wait_for_run(client, first[0], finished)
        await start(client, "ticks")  # room again
    # Leaving the lifespan stopped the runs that were still going.


async def test_shutdown_stops_and_records_active_runs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with open_client(create_app(config)) as client:
        await put(client, TICKS)
        run_id = await start(client, "ticks")
        await wait_for_run(client, run_id, lambda d: d["nodes"]["sink"]["items_in"] > 0)
    async with open_client(create_app(config)) as client:
        detail = (await client.get(f"/api/runs/{run_id}")).json()
        assert detail["status"] == "completed"  # drained, then recorded
        assert detail["nodes"]["sink"]["items_in"] > 0


# --- persistence -----------------------------------------------------------------


async def test_restart_keeps_workflows_and_finished_runs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with open_client(create_app(config)) as client:
        await put(client, NUMBERS)
        run_id = await start(client, "numbers")
        before = await wait_for_run(client, run_id, finished)
    # A DAG run left active by a process that died is found interrupted.
    store = Store(config.db)
    lost = RunSummary(
        run_id="dead00",
        workflow="numbers",
        mode="dag",
        status="running",
        started_at="2026-01-02T03:04:05.678Z",
    )
    store.insert_run(lost, Workflow("numbers"))
    store.close()
    async with open_client(create_app(config)) as client:
        names = [w["name"] for w in (await client.get("/api/workflows")).json()]
        assert names == ["numbers"]
        after = (await client.get(f"/api/runs/{run_id}")).json()
        assert after == before
        assert after["outputs"] == {"result": {"out": NUMBERS_OUT}}
        dead = (await client.get("/api/runs/dead00")).json()
        assert dead["status"] == "interrupted"
        assert "server stopped" in dead["error"]
        assert dead["started_at"] == "2026-01-02T03:04:05.678Z"
        assert dead["ended_at"] > dead["started_at"]
        assert {r["run_id"] for r in (await client.get("/api/runs")).json()} == {
            run_id,
            "dead00",
        }


# --- auth and errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/workflows/numbers"),
        ("DELETE", "/api/workflows/numbers"),
        ("POST", "/api/workflows/numbers/runs"),
        ("POST", "/api/runs/abc123/stop"),
        ("POST", "/api/runs/abc123/cancel"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic " + TOKEN, TOKEN])
async def test_mutations_need_the_token(
    client: httpx.AsyncClient, method: str, path: str, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth is not None else {}
    r = await client.request(method, path, json=NUMBERS, headers=headers)
    doc = assert_problem(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in r.text
    assert "token" in doc["detail"]


async def test_reads_need_the_token_beyond_loopback(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, host="0.0.0.0"))
    async with open_client(app) as client:
        for path in ("/api/health", "/api/workflows", "/api/nodes", "/metrics"):
            assert_problem(await client.get(path), 401)
            assert (await client.get(path, headers=AUTH)).status_code == 200
        # The UI's page holds no data; its API calls carry the token.
        assert (await client.get("/")).status_code == 200


async def test_every_error_is_a_problem_document(
    client: httpx.AsyncClient, config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_problem(await client.get("/no/such/path"), 404)
    assert_problem(await client.get("/schema/no-such-page"), 404)
    assert_problem(await client.patch("/api/workflows", headers=AUTH), 405)
    assert_problem(await client.get("/api/runs", params={"limit": "many"}), 400)
    assert_problem(await client.get("/api/workflows/bad name!"), 400)

    def boom(*args: Any) -> None:
        msg = "disk on fire /secret/path"
        raise RuntimeError(msg)

    store = client._transport.app.state.flowstream.store  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "list_workflows", boom)
    r = await client.get("/api/workflows")
    doc = assert_problem(r, 500)
    assert "secret" not in r.text
    assert "log" in doc["detail"]


async def test_generated_token_is_private_and_reused(tmp_path: Path) -> None:
    from flowstream.server.auth import load_token

    config = make_config(tmp_path, token=None)
    token, generated = load_token(config, environ={})
    assert generated
    assert config.token_path.stat().st_mode & 0o777 == 0o600
    assert load_token(config, environ={}) == (token, False)
    assert load_token(config, environ={"FLOWSTREAM_TOKEN": "env"}) == ("env", False)
    with pytest.raises(ValueError, match="empty"):
        load_token(config, environ={"FLOWSTREAM_TOKEN": ""})
    app = create_app(config)
    async with open_client(app) as client:
        r = await client.put(
            "/api/workflows/numbers",
            json=NUMBERS,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200


async def test_runs_in_parallel_do_not_mix(client: httpx.AsyncClient) -> None:
    await put(client, NUMBERS)
    ids = await asyncio.gather(*(start(client, "numbers") for _ in range(4)))
    for run_id in ids:
        detail = await wait_for_run(client, run_id, finished)
        assert detail["outputs"] == {"result": {"out": NUMBERS_OUT}}


async def test_an_upload_with_a_costly_cel_expression_is_422_under_the_server_ceiling(
    client: httpx.AsyncClient,
) -> None:
    # Two nested maps over the item pass the CLI's ceiling, not the server's.
    costly = {
        "name": "costly",
        "nodes": [
            {"id": "numbers", "type": "source.range", "config": {"stop": 3}},
            {
                "id": "pairs",
                "type": "transform.map",
                "config": {"expr": "x.map(a, x.map(b, a * b))"},
            },
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["numbers -> pairs", "pairs -> out"],
    }
    doc = assert_problem(await put(client, costly), 422)
    [problem] = doc["problems"]
    assert (problem["node"], problem["field"]) == ("pairs", "config.expr")
    assert "over the limit of 1,000,000" in problem["message"]
