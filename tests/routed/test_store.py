"""SharedStore over every backend: typed get/set, delete, keys, namespaces."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream.errors import DecodeError, EncodeError
from flowstream.routed import (
    FileStorage,
    MemoryStorage,
    SharedStore,
    SQLiteStorage,
    Storage,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class User(msgspec.Struct):
    id: int
    name: str
    tags: list[str] = []


BACKENDS = ["memory", "file-json", "file-msgpack", "sqlite"]


def make(kind: str, tmp_path: Path) -> Storage:
    if kind == "memory":
        return MemoryStorage()
    if kind == "file-json":
        return FileStorage(tmp_path / "store.json")
    if kind == "file-msgpack":
        return FileStorage(tmp_path / "store.msgpack")
    return SQLiteStorage(tmp_path / "store.db")


@pytest.fixture(params=BACKENDS)
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Storage]:
    backend = make(request.param, tmp_path)
    try:
        yield backend
    finally:
        await backend.aclose()


async def test_typed_get_decodes_and_validates(storage: Storage) -> None:
    store = SharedStore(storage, "run-1")
    await store.set("user_id", "u-42")
    await store.set("user", User(id=7, name="ann", tags=["a"]))
    await store.set("when", dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC))
    await store.set("blob", b"\x00\x01binary")
    await store.set("counts", [1, 2, 3])
    assert await store.get("user_id", type=str) == "u-42"
    assert await store.get("user", type=User) == User(id=7, name="ann", tags=["a"])
    assert await store.get("when", type=dt.datetime) == dt.datetime(
        2024, 5, 1, 12, 30, tzinfo=dt.UTC
    )
    assert await store.get("blob", type=bytes) == b"\x00\x01binary"
    assert await store.get("counts", type=list[int]) == [1, 2, 3]
    # Untyped, values come back as plain JSON values.
    assert await store.get("user") == {"id": 7, "name": "ann", "tags": ["a"]}
    assert await store.get("when") == "2024-05-01T12:30:00Z"


async def test_a_value_of_the_wrong_type_names_the_key(storage: Storage) -> None:
    store = SharedStore(storage)
    await store.set("user", {"id": "seven", "name": "ann"})
    with pytest.raises(
        DecodeError, match=r"store key 'user' is not a valid User.*\$\.id"
    ):
        await store.get("user", type=User)
    await store.set("n", "3")
    with pytest.raises(DecodeError, match="store key 'n' is not a valid int"):
        await store.get("n", type=int)


async def test_missing_keys_raise_or_default(storage: Storage) -> None:
    store = SharedStore(storage)
    with pytest.raises(KeyError, match="no key 'nope' in store namespace 'default'"):
        await store.get("nope")
    assert await store.get("nope", default=None) is None
    assert await store.get("nope", type=int, default=-1) == -1
    assert not await store.has("nope")


async def test_set_replaces_and_delete_removes(storage: Storage) -> None:
    store = SharedStore(storage, "ns")
    await store.set("a", 1)
    await store.set("a", {"now": "a dict"})
    await store.set("none", None)
    assert await store.get("a") == {"now": "a dict"}
    assert await store.has("none")
    assert await store.get("none", default="absent") is None
    assert await store.keys() == ["a", "none"]
    assert await store.delete("a") is True
    assert await store.delete("a") is False
    assert await store.keys() == ["none"]
    await store.clear()
    assert await store.keys() == []


async def test_namespaces_do_not_see_each_other(storage: Storage) -> None:
    one, two = SharedStore(storage, "one"), SharedStore(storage, "two")
    await one.update({"k": 1, "only_one": True})
    await two.set("k", 2)
    assert await one.get("k") == 1
    assert await two.get("k") == 2
    assert await two.keys() == ["k"]
    assert await one.snapshot() == {"k": 1, "only_one": True}
    await one.clear()
    assert await two.get("k") == 2


@pytest.mark.parametrize(
    "value", [float("nan"), [1.0, float("inf")], {"x": complex(1, 2)}, object()]
)
async def test_values_without_a_json_form_are_refused(value: Any) -> None:
    store = SharedStore()
    with pytest.raises(EncodeError):
        await store.set("bad", value)
    with pytest.raises(EncodeError):
        await store.update({"fine": 1, "bad": value})
    assert await store.keys() == []  # the batch is encoded before any write


def temporary_files(directory: Path) -> list[Path]:
    return list(directory.glob(".*.tmp"))


async def test_the_json_file_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    async with FileStorage(path) as storage:
        store = SharedStore(storage, "job")
        await store.set("user", User(id=1, name="bo"))
        await store.set("n", 3)
        assert storage.format == "json"
        assert await storage.namespaces() == ["job"]
    assert json.loads(path.read_text()) == {
        "job": {"user": {"id": 1, "name": "bo", "tags": []}, "n": 3}
    }
    assert temporary_files(tmp_path) == []  # nothing left behind


async def test_msgpack_file_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.mpk"
    async with FileStorage(path) as storage:
        assert storage.format == "msgpack"
        await SharedStore(storage, "job").set("k", [1, "two"])
        await SharedStore(storage, "job").delete("k")
        await SharedStore(storage, "job").set("k2", "kept")
    decoded = msgspec.msgpack.decode(path.read_bytes())
    assert decoded == {"job": {"k2": b'"kept"'}}
    async with FileStorage(path) as again:
        assert await SharedStore(again, "job").get("k2") == "kept"


async def test_a_file_that_is_not_a_store_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("[1, 2")
    async with FileStorage(path) as storage:
        with pytest.raises(DecodeError, match=r"broken\.json: not a json store file"):
            await SharedStore(storage).get("k", default=None)


async def test_closed_backends_refuse_work_and_close_twice(tmp_path: Path) -> None:
    for backend in (FileStorage(tmp_path / "c.json"), SQLiteStorage(tmp_path / "c.db")):
        await SharedStore(backend).set("k", 1)
        await backend.aclose()
        await backend.aclose()
        with pytest.raises(RuntimeError, match="is closed"):
            await backend.get("default", "k")


def test_bad_backend_arguments() -> None:
    with pytest.raises(ValueError, match="format must be"):
        FileStorage("x.json", format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="table must be a plain identifier"):
        SQLiteStorage(":memory:", table="drop table")
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStorage(":memory:", synchronous="off")  # type: ignore[arg-type]


def test_backends_follow_the_protocol(tmp_path: Path) -> None:
    for backend in (
        MemoryStorage(),
        FileStorage(tmp_path / "p.json"),
        SQLiteStorage(":memory:"),
    ):
        assert isinstance(backend, Storage)
    assert "MemoryStorage" in repr(SharedStore())


async def test_a_custom_backend(tmp_path: Path) -> None:
    class Recording:
        def __init__(self) -> None:
            self.data: dict[tuple[str, str], bytes] = {}
            self.calls: list[str] = []

        async def get(self, namespace: str, key: str) -> bytes | None:
            self.calls.append("get")
            return self.data.get((namespace, key))

        async def set(self, namespace: str, key: str, value: bytes) -> None:
            self.calls.append("set")
            self.data[namespace, key] = value

        async def delete(self, namespace: str, key: str) -> bool:
            return self.data.pop((namespace, key), None) is not None

        async def keys(self, namespace: str) -> list[str]:
            return [k for ns, k in self.data if ns == namespace]

        async def aclose(self) -> None:
            pass

    backend = Recording()
    assert isinstance(backend, Storage)
    store = SharedStore(backend, "x")
    await store.set("k", {"v": 1})
    assert backend.data == {("x", "k"): b'{"v":1}'}
    assert await store.get("k", type=dict[str, int]) == {"v": 1}
    assert backend.calls == ["set", "get"]


async def test_a_backend_left_open_warns(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "leak.db")
    await SharedStore(storage).set("k", 1)
    # Called directly: when the collector gets to it depends on who else
    # still holds a reference (its worker thread, a traceback), and a warning
    # raised later would land in another test.
    with pytest.warns(ResourceWarning, match="was never closed"):
        storage.__del__()
    await storage.aclose()
