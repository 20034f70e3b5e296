"""File and SQLite stores across processes, and a writer killed mid-write."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from flowstream.routed import FileStorage, SharedStore, SQLiteStorage

ROOT = Path(__file__).resolve().parents[2]


class User(msgspec.Struct):
    id: int
    name: str


def python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


OPEN = """
import asyncio, sys
from flowstream.routed import FileStorage, SQLiteStorage, SharedStore

def backend(path):
    return SQLiteStorage(path) if path.endswith(".db") else FileStorage(path)
"""


def backend(path: Path) -> FileStorage | SQLiteStorage:
    return SQLiteStorage(path) if path.suffix == ".db" else FileStorage(path)


@pytest.mark.parametrize("name", ["state.json", "state.msgpack", "state.db"])
async def test_a_value_written_by_one_process_is_read_by_another(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    python(
        OPEN
        + """
async def main():
    async with backend(sys.argv[1]) as storage:
        await SharedStore(storage, "job-7").set("user", {"id": 7, "name": "ann"})
asyncio.run(main())
""",
        str(path),
    )
    async with backend(path) as storage:
        store = SharedStore(storage, "job-7")
        assert await store.get("user", type=User) == User(id=7, name="ann")
        await store.set("reply", "hello from the parent")
        # This process keeps the backend open while the next one writes.
        out = python(
            OPEN
            + """
async def main():
    async with backend(sys.argv[1]) as storage:
        store = SharedStore(storage, "job-7")
        print(await store.get("reply", type=str))
        await store.set("count", 2)
asyncio.run(main())
""",
            str(path),
        )
        assert out.strip() == "hello from the parent"
        # A write by another process shows up on the next read here.
        assert await store.get("count", type=int) == 2


WRITER = """
import asyncio, sys
from flowstream.routed import FileStorage, SharedStore

async def main():
    store = SharedStore(FileStorage(sys.argv[1]), "crash")
    big = "x" * 200_000  # long writes: the kill likely lands inside one
    i = 0
    while True:
        i += 1
        await store.update({"counter": i, "payload": big[: 1000 + i * 997 % 199_000]})
        print(i, flush=True)

asyncio.run(main())
"""


def write_until_killed(path: Path, writes: int) -> int:
    """Start a writer, check the file after each of its writes, kill it."""
    decode = msgspec.msgpack.decode if path.suffix == ".mpk" else msgspec.json.decode
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    last = 0
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            last = int(line)
            # Readers racing the writer always see a whole file.
            decode(path.read_bytes())
            if last >= writes:
                break
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        for pipe in (writer.stdout, writer.stderr):
            if pipe is not None:
                pipe.close()
    assert writer.returncode == -signal.SIGKILL
    decode(path.read_bytes())
    return last


@pytest.mark.parametrize("name", ["state.json", "state.mpk"])
async def test_a_writer_killed_mid_write_never_leaves_a_torn_file(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    last = write_until_killed(path, writes=40)
    assert last >= 40, "the writer stopped early"
    async with FileStorage(path) as storage:
        store = SharedStore(storage, "crash")
        counter = await store.get("counter", type=int)
        # Every write the writer reported is on disk; one more may have landed.
        assert counter >= last
        assert len(await store.get("payload", type=str)) >= 1000
