"""Uploads with sandboxed (wasm) nodes: run freely, held to the server's rules."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowstream.server import create_app

from .conftest import finished, make_config, open_client, wait_for_run
from .test_api import assert_problem, put, start

if TYPE_CHECKING:
    import httpx

ROOT = Path(__file__).resolve().parents[2]
ARITH = ROOT / "examples" / "wasm" / "arith.wat"
INLINE = "base64:" + base64.b64encode(ARITH.read_bytes()).decode()
HOSTILE = ROOT / "tests" / "connectors" / "wasm" / "hostile.wat"
HOSTILE_INLINE = "base64:" + base64.b64encode(HOSTILE.read_bytes()).decode()


def wasm_doc(name: str, config: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    return {
        "name": name,
        "error_handling": {"mode": "continue_on_error"},
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": values}},
            {"id": "f", "type": "wasm.map", "config": config},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["src -> f", "f -> out"],
    }


async def test_an_uploaded_wasm_node_runs(client: httpx.AsyncClient) -> None:
    doc = wasm_doc("arith", {"module": INLINE, "function": "double_plus_one"}, [1, 2])
    assert (await put(client, doc)).status_code == 200
    detail = await wait_for_run(client, await start(client, "arith"), finished)
    assert detail["status"] == "completed", detail
    assert detail["outputs"] == {"out": {"out": [3, 5]}}


async def test_an_uploaded_endless_loop_is_stopped_and_the_run_goes_on(
    client: httpx.AsyncClient,
) -> None:
    config = {
        "module": HOSTILE_INLINE,
        "function": "spin",
        "limits": {"time_limit_ms": 30},
    }
    assert (await put(client, wasm_doc("spin", config, [1, -1, 2]))).status_code == 200
    detail = await wait_for_run(client, await start(client, "spin"), finished)
    assert detail["status"] == "completed", detail
    assert detail["outputs"] == {"out": {"out": [1, 2]}}
    [dead] = detail["dead_letters"]
    assert dead["item"] == -1
    assert "time limit exceeded" in dead["reason"]


async def test_uploads_asking_for_files_paths_or_more_than_the_ceiling_are_refused(
    tmp_path: Path,
) -> None:
    app = create_app(make_config(tmp_path, sandbox_time_limit_ms=200))
    config = {
        "module": str(ARITH),
        "function": "double",
        "limits": {
            "wasi": ["clock", "files"],
            "dirs": ["/"],
            "time_limit_ms": 500,
            "memory_pages": 1000,
        },
    }
    async with open_client(app) as client:
        problems = assert_problem(await put(client, wasm_doc("w", config, [1])), 422)
        got = {p["field"]: p["message"] for p in problems["problems"]}
        assert set(got) == {
            "config.module",
            "config.limits.dirs[0]",  # the data directory's rule: absolute
            "config.limits.wasi",
            "config.limits.time_limit_ms",
            "config.limits.memory_pages",
        }
        assert {p["node"] for p in problems["problems"]} == {"f"}
        assert "send the module inline as 'base64:'" in got["config.module"]
        assert "never grants files" in got["config.limits.wasi"]
        assert "ceiling of 200" in got["config.limits.time_limit_ms"]
        assert "ceiling of 256" in got["config.limits.memory_pages"]
        # The same node within the rules is accepted (clock may be granted).
        ok = {
            "module": INLINE,
            "function": "double",
            "limits": {"wasi": ["clock"], "time_limit_ms": 200},
        }
        assert (await put(client, wasm_doc("w", ok, [1]))).status_code == 200
        # A default above a lowered ceiling must be lowered explicitly.
        bare = {"module": INLINE, "function": "double"}
        problems = assert_problem(await put(client, wasm_doc("w", bare, [1])), 422)
        [problem] = problems["problems"]
        assert problem["field"] == "config.limits.time_limit_ms"


async def test_the_node_list_shows_the_servers_limits(tmp_path: Path) -> None:
    app = create_app(make_config(tmp_path, sandbox_memory_pages=64))
    async with open_client(app) as client:
        types = {t["type"]: t for t in (await client.get("/api/nodes")).json()}
    assert types["wasm.map"]["allowed"] is True
    assert types["wasm.map"]["limits"] == {
        "time_limit_ms": 1000.0,
        "memory_pages": 64,
        "wasi": ["clock", "random"],
        "module": "inline (base64:...)",
    }
    assert types["wasm.filter"]["limits"] == types["wasm.map"]["limits"]
    assert types["transform.map"]["limits"] is None
