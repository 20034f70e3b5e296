"""Uploaded workflows open files only inside the server's data directory (issue 11).

Before, ``checkpoint.path`` and ``ws.source``'s ``journal`` created SQLite
files anywhere, and a checkpoint pointed at the server's own database
corrupted it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import typing
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream import default_registry
from flowstream.core.markers import markers_of
from flowstream.core.workflow import Checkpoint
from flowstream.server import create_app
from flowstream.server.datadir import DataDir

from .conftest import AUTH, finished, make_config, open_client, wait_for_run

if TYPE_CHECKING:
    from pathlib import Path

    import httpx


async def put(client: httpx.AsyncClient, doc: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/api/workflows/{doc['name']}", json=doc, headers=AUTH)


def checkpointed(path: str) -> dict[str, Any]:
    return {
        "name": "ck",
        "checkpoint": {"path": path},
        "nodes": [
            {"id": "src", "type": "source.values", "config": {"values": [1, 2]}},
            {"id": "out", "type": "sink.collect"},
        ],
        "connections": ["src -> out"],
    }


def journaled(journal: str) -> dict[str, Any]:
    return {
        "name": "ingest",
        "mode": "stream",
        "nodes": [
            {
                "id": "in",
                "type": "ws.source",
                "config": {"mode": "server", "journal": journal},
            },
            {"id": "out", "type": "sink.null"},
        ],
        "connections": ["in -> out"],
    }


def problem(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    (p,) = r.json()["problems"]
    assert isinstance(p, dict)
    return p


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("{tmp}/elsewhere.db", "is absolute"),
        ("../elsewhere.db", "climbs out"),
        ("sub/../../elsewhere.db", "climbs out"),
        ("~/elsewhere.db", "is absolute"),
        ("escape/elsewhere.db", "leaves the server's data directory"),
        (".", "leaves the server's data directory"),
    ],
)
async def test_paths_outside_the_data_dir_are_refused(
    tmp_path: Path, path: str, why: str
) -> None:
    config = make_config(tmp_path)
    data = config.data_path
    data.mkdir()
    (tmp_path / "outside").mkdir()
    (data / "escape").symlink_to(tmp_path / "outside")
    path = path.format(tmp=tmp_path)
    async with open_client(create_app(config)) as client:
        p = problem(await put(client, checkpointed(path)))
        assert p["field"] == "checkpoint.path"
        assert why in p["message"]
        p = problem(await put(client, journaled(path)))
        assert (p["node"], p["field"]) == ("in", "config.journal")
        assert why in p["message"]
    assert sorted(os.listdir(tmp_path / "outside")) == []
    assert not (tmp_path / "elsewhere.db").exists()


async def test_the_servers_own_files_are_never_reachable(tmp_path: Path) -> None:
    # Even with the data directory holding the database, the token and the
    # database's side files are refused.
    config = make_config(tmp_path, data_dir=tmp_path, token_file=tmp_path / "t")
    async with open_client(create_app(config)) as client:
        r = await put(client, {"name": "harmless", "nodes": []})
        assert r.status_code == 200, r.text
        for name in (
            "flowstream.db",
            "flowstream.db-wal",
            "flowstream.db-journal",
            "t",
        ):
            p = problem(await put(client, checkpointed(name)))
            assert "one of the server's own files" in p["message"], name
        r = await client.get("/api/workflows/harmless")
        assert r.status_code == 200
    with sqlite3.connect(tmp_path / "flowstream.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_relative_paths_resolve_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    config = make_config(tmp_path, allow_nodes=("file.sink",))
    doc = checkpointed("ck.db")
    doc["nodes"].append(
        {"id": "file", "type": "file.sink", "config": {"path": "o.jsonl"}}
    )
    doc["connections"].append("src -> file")
    async with open_client(create_app(config)) as client:
        assert (await put(client, doc)).status_code == 200
        r = await client.post("/api/workflows/ck/runs", headers=AUTH)
        assert r.status_code == 201, r.text
        detail = await wait_for_run(client, r.json()["run_id"], finished)
    assert detail["status"] == "completed", detail
    # The API shows the workflow as submitted, not the server's directories.
    assert detail["graph"]["checkpoint"]["path"] == "ck.db"
    data = tmp_path / "flowstream.db.data"
    assert config.data_path == data
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert (data / "ck.db").exists()
    lines = (data / "o.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [1, 2]
    assert os.listdir(work) == []


async def test_an_allowed_file_node_is_confined_too(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, allow_nodes=("file.source", "sqlite.sink"), data_dir=tmp_path / "d"
    )
    doc = {
        "name": "copy",
        "nodes": [
            {"id": "read", "type": "file.source", "config": {"path": "/etc/passwd"}},
            {
                "id": "db",
                "type": "sqlite.sink",
                "config": {"path": "../x.db", "table": "t"},
            },
        ],
        "connections": ["read -> db"],
    }
    async with open_client(create_app(config)) as client:
        r = await put(client, doc)
        assert r.status_code == 422
        fields = {(p["node"], p["field"]) for p in r.json()["problems"]}
        assert fields == {("read", "config.path"), ("db", "config.path")}


def test_data_dir_resolution(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data", protected=(tmp_path / "data" / "own.db",))
    data.create()
    (tmp_path / "data" / "sub").mkdir()
    assert data.resolve("a.db") == str(tmp_path / "data" / "a.db")
    assert data.resolve("sub/./b.db") == str(tmp_path / "data" / "sub" / "b.db")
    for bad in ("", "a\x00b", "own.db", "sub/../own.db", "/own.db"):
        with pytest.raises(ValueError):  # noqa: PT011 (each has its own reason)
            data.resolve(bad)


# --- every path field is marked ---------------------------------------------------

# Config fields whose names look like files but are not: each with its reason.
NOT_FILES = {
    ("ws.source", "path"): "the URL path a server accepts",
    ("ws.sink", "path"): "the URL path a server accepts",
    ("routed.flow", "flow"): (
        "a flow file or module:attr; the node type imports code, so a server "
        "denies it unless the operator trusts uploads with code"
    ),
}
FILE_NAME = ("path", "file", "journal", "dir", "db", "database", "store", "flow")
URL_NAME = ("url", "uri", "endpoint", "server", "broker")


def _struct_fields(cls: type[msgspec.Struct], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    for name in cls.__struct_fields__:
        hint = hints[name]
        inner = [
            a
            for a in typing.get_args(hint) or (hint,)
            if isinstance(a, type) and issubclass(a, msgspec.Struct)
        ]
        if inner:
            yield from _struct_fields(inner[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", name, hint


def _holds_text(hint: Any) -> bool:
    if hint is str:
        return True
    return any(_holds_text(arg) for arg in typing.get_args(hint))


def test_every_path_url_and_host_field_is_marked() -> None:
    # A connector whose file or URL field is a plain str would escape the
    # server's data directory and network policy: refuse it here.
    unmarked = []
    registry = default_registry()
    configs: list[tuple[str, type[msgspec.Struct]]] = [("workflow", Checkpoint)]
    configs += [(s.type_id, s.config_type) for s in registry if s.config_type]
    for type_id, cls in configs:
        for path, name, hint in _struct_fields(cls):
            kinds = {kind for kind, _ in markers_of(hint)}
            lower = name.lower()
            if (type_id, path) in NOT_FILES or not _holds_text(hint):
                continue
            wanted = None
            if any(part in lower for part in FILE_NAME):
                wanted = "path"
            elif any(part in lower for part in URL_NAME):
                wanted = "url"
            elif lower in ("host", "bind", "address", "listen"):
                wanted = "listen"
            if wanted is not None and wanted not in kinds:
                unmarked.append(f"{type_id} {path}: {wanted}")
    assert unmarked == []


async def test_a_live_run_shows_the_workflow_as_submitted(tmp_path: Path) -> None:
    doc = {
        "name": "ticks",
        "mode": "stream",
        "checkpoint": {"path": "ticks.ckpt", "interval_ms": 50},
        "nodes": [
            {"id": "tick", "type": "source.timer", "config": {"interval_ms": 5}},
            {"id": "sink", "type": "sink.null"},
        ],
        "connections": ["tick -> sink"],
    }
    async with open_client(create_app(make_config(tmp_path))) as client:
        assert (await put(client, doc)).status_code == 200
        r = await client.post("/api/workflows/ticks/runs", headers=AUTH)
        run_id = r.json()["run_id"]
        detail = await wait_for_run(client, run_id, lambda d: d["status"] == "running")
        assert detail["graph"]["checkpoint"]["path"] == "ticks.ckpt"
        await client.post(f"/api/runs/{run_id}/stop", headers=AUTH)
        detail = await wait_for_run(client, run_id, finished)
    assert detail["graph"]["checkpoint"]["path"] == "ticks.ckpt"
    assert (tmp_path / "flowstream.db.data" / "ticks.ckpt").exists()
