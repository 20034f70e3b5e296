"""WebSocket ingestion: ``ws.source`` (server mode) against a bare receive loop.

Records/s taken in over loopback by ``ws.source`` into a counting sink, for
one-record frames and 100-record frames, JSON and MessagePack. The ceiling is
a bare ``websockets`` server whose handler does the same decode (one
``msgspec`` decoder, ``recv(decode=False)``) and counts, measured in the same
run. Target: flowstream >= 0.8x the bare loop in both framings.

The sender is a separate process (no shared event loop or GIL) writing
pre-built, pre-masked frames to a raw socket after the opening handshake, so
that it outruns any receiver: what is measured is the receiving side.

``python -m benchmarks.bench_ws [--quick] [--repeat N] [--json PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.asyncio.server import serve

from connectors.websocket import ws_source
from flowstream import FlowRuntime, NodeEvent, NodeRegistry, Workflow, node

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from websockets.asyncio.server import ServerConnection

    from flowstream import ExecutionEvent

ROOT = Path(__file__).resolve().parents[1]
RECORD = {"sensor": "s3", "value": 1.5, "ts": 1700000000.125}
TARGET = 0.8


# --- the sender (its own process) ------------------------------------------------


def frame_bytes(payload: bytes, text: bool) -> bytes:
    """One masked client frame; the zero mask key leaves the payload as is."""
    head = bytearray([0x81 if text else 0x82])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += struct.pack("!H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", n)
    return bytes(head) + b"\0\0\0\0" + payload


def send_frames(port: int, blob: bytes, repeats: int) -> None:
    """Handshake, then write ``blob`` ``repeats`` times as fast as possible."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            msg = "handshake refused"
            raise ConnectionError(msg)
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        msg = response.decode(errors="replace")
        raise ConnectionError(msg)
    for _ in range(repeats):
        sock.sendall(blob)
    sock.settimeout(30)
    try:
        sock.sendall(b"\x88\x82\0\0\0\0" + struct.pack("!H", 1000))
        while sock.recv(65536):
            pass
    except OSError:
        pass  # the receiver may close first; everything was sent
    sock.close()


def start_sender(port: int, work: Workload) -> subprocess.Popen[bytes]:
    """Run the sender in its own interpreter (``bench_ws --send``)."""
    args = [str(port), work.encoding, str(work.per_frame), str(work.frames)]
    command = [sys.executable, "-m", "benchmarks.bench_ws", "--send", *args]
    return subprocess.Popen(command, cwd=ROOT)


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pin_sender() -> None:
    """The sender takes the last core; the receiver keeps the first."""
    cpus = _cpus()
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[-1]})


@contextlib.contextmanager
def receiver_pinned() -> Iterator[None]:
    """Pin this process to the first core while measuring, then restore."""
    cpus = _cpus()
    if len(cpus) < 2:
        yield
        return
    os.sched_setaffinity(0, {cpus[0]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cpus))


def sender_main(argv: list[str]) -> int:
    pin_sender()
    port, encoding, per_frame, frames = argv
    work = Workload(encoding, int(per_frame), int(frames))
    blob, repeats = work.blob()
    send_frames(int(port), blob, repeats)
    return 0


# --- receivers -----------------------------------------------------------------


class Workload(msgspec.Struct, frozen=True):
    encoding: str
    per_frame: int
    frames: int

    @property
    def records(self) -> int:
        return self.frames * self.per_frame

    def blob(self) -> tuple[bytes, int]:
        """Pre-encoded frames to write, and how many times to write them."""
        value: Any = RECORD if self.per_frame == 1 else [RECORD] * self.per_frame
        text = self.encoding == "json"
        payload = msgspec.json.encode(value) if text else msgspec.msgpack.encode(value)
        chunk = min(self.frames, 1000)
        assert self.frames % chunk == 0
        return frame_bytes(payload, text) * chunk, self.frames // chunk


async def bare(work: Workload) -> float:
    """The ceiling: websockets + msgspec, decode and count, nothing else."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    decoder: Any = (
        msgspec.json.Decoder() if work.encoding == "json" else msgspec.msgpack.Decoder()
    )
    target = work.records

    async def handler(ws: ServerConnection) -> None:
        recv = ws.recv
        decode = decoder.decode
        value = decode(await recv(decode=False))
        start = time.perf_counter()
        count = len(value) if type(value) is list else 1
        while count < target:
            value = decode(await recv(decode=False))
            count += len(value) if type(value) is list else 1
        done.set_result(count / (time.perf_counter() - start))

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        proc = start_sender(port, work)
        rate = await done
    proc.wait(30)
    return rate


class CountConfig(msgspec.Struct, frozen=True, kw_only=True):
    target: int


class Counter:
    """A sink that counts records and notes when the first and last arrive."""

    done: asyncio.Future[float]

    def __init__(self, config: CountConfig) -> None:
        self.target = config.target

    async def initialize(self, ctx: Any) -> None:
        return None

    async def execute(self, inp: AsyncIterator[list[Any]]) -> AsyncIterator[Any]:
        count = 0
        start = 0.0
        async for batch in inp:
            if not count:
                start = time.perf_counter()
            count += len(batch)
            if count >= self.target and not Counter.done.done():
                Counter.done.set_result(count / (time.perf_counter() - start))
        return
        yield

    async def shutdown(self) -> None:
        return None


count_sink = node("bench.count", config=CountConfig, batched=True)(Counter)


async def flowstream(work: Workload) -> float:
    """``ws.source`` (server mode) -> a counting sink, in stream mode."""
    registry = NodeRegistry.default(entry_points=False)
    registry.register(ws_source)
    registry.register(count_sink)
    runtime = FlowRuntime(registry)
    loop = asyncio.get_running_loop()
    listening: asyncio.Future[int] = loop.create_future()
    Counter.done = loop.create_future()

    def on_event(event: ExecutionEvent) -> None:
        if isinstance(event, NodeEvent) and event.name == "listening":
            if not listening.done():
                listening.set_result(event.data["port"])

    runtime.bus.add_listener(on_event)
    wf = (
        Workflow("bench-ws", mode="stream")
        .node("ws", "ws.source", mode="server", encoding=work.encoding)
        .node("count", "bench.count", target=work.records)
        .connect("ws -> count")
    )
    executor = runtime.executor(wf)
    run = asyncio.ensure_future(executor.run())
    port = await listening
    proc = start_sender(port, work)
    rate = await Counter.done
    # The first frame's records are counted in the rate; a handful of bytes
    # in a run of millions of records.
    executor.stop()
    result = await run
    assert result.ok, result.error
    proc.wait(30)
    return rate


# --- running ---------------------------------------------------------------------


def workloads(quick: bool) -> list[Workload]:
    one, hundred = (60_000, 6_000) if quick else (200_000, 20_000)
    return [
        Workload("json", 1, one),
        Workload("json", 100, hundred),
        Workload("msgpack", 1, one),
        Workload("msgpack", 100, hundred),
    ]


def run(quick: bool = False, repeat: int | None = None) -> dict[str, Any]:
    """Measure every workload; return the results (also printed as a table)."""
    rounds = repeat if repeat is not None else 3
    rows: list[dict[str, Any]] = []
    for work in workloads(quick):
        bare_rates: list[float] = []
        flow_rates: list[float] = []
        with receiver_pinned():
            for _ in range(max(1, rounds)):
                # Interleaved, so a burst of load on the machine hits both alike.
                bare_rates.append(asyncio.run(bare(work)))
                flow_rates.append(asyncio.run(flowstream(work)))
        b = statistics.median(bare_rates)
        f = statistics.median(flow_rates)
        rows.append(
            {
                "encoding": work.encoding,
                "records_per_frame": work.per_frame,
                "records": work.records,
                "bare_records_per_s": round(b),
                "flowstream_records_per_s": round(f),
                "ratio": round(f / b, 3),
                "meets_target": f / b >= TARGET,
            }
        )
        print(
            f"  {work.encoding:8} x{work.per_frame:<4} bare {b:>11,.0f}/s  "
            f"flowstream {f:>11,.0f}/s  ratio {f / b:.2f}",
            file=sys.stderr,
        )
    return {
        "name": "ws",
        "target_ratio": TARGET,
        "rounds": rounds,
        "python": sys.version.split()[0],
        "results": rows,
    }


def table(results: dict[str, Any]) -> str:
    head = (
        f"{'encoding':<9} {'rec/frame':>9} {'records':>10} {'bare rec/s':>12} "
        f"{'flowstream rec/s':>17} {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results["results"]:
        mark = "" if r["meets_target"] else "  < target"
        lines.append(
            f"{r['encoding']:<9} {r['records_per_frame']:>9} {r['records']:>10,} "
            f"{r['bare_records_per_s']:>12,} {r['flowstream_records_per_s']:>17,} "
            f"{r['ratio']:>6.2f}{mark}"
        )
    lines.append(f"(median of {results['rounds']}; target ratio >= {TARGET})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--send"]:
        return sender_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument("--repeat", type=int, default=None, help="rounds (median)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    results = run(quick=args.quick, repeat=args.repeat)
    print(table(results))
    print(json.dumps(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
