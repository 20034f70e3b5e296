"""WebSocket ingestion: ``ws.source`` (server mode) against a bare receive loop.

Records/s taken in over loopback by ``ws.source`` into a counting sink, for
one-record frames and 100-record frames, JSON and MessagePack. The ceiling is
a bare ``websockets`` server whose handler does the same decode (one
``msgspec`` decoder, ``recv(decode=False)``) and counts, measured in the same
run. Target: flowstream >= 0.8x the bare loop in both framings.

The sender is a separate process (no shared event loop or GIL) writing
pre-built, pre-masked frames to a raw socket after the opening handshake, so
that it outruns any receiver: what is measured is the receiving side.

``python -m benchmarks.bench_ws [--quick] [--repeat N] [--json PATH]``; in
``python -m benchmarks`` as workload ``ws``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
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
from flowstream import FlowRuntime, NodeEvent, Workflow, default_registry, node

from . import _harness as h

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from websockets.asyncio.server import ServerConnection

    from flowstream import ExecutionEvent

NAME = "ws"
ROOT = Path(__file__).resolve().parents[1]
RECORD = {"sensor": "s3", "value": 1.5, "ts": 1700000000.125}
TARGET = 0.8
TIMEOUT_S = 120.0


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


def start_sender(port: int, work: Case) -> subprocess.Popen[bytes]:
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
    work = Case(encoding, int(per_frame), int(frames))
    blob, repeats = work.blob()
    send_frames(int(port), blob, repeats)
    return 0


# --- receivers -----------------------------------------------------------------


class Case(msgspec.Struct, frozen=True):
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


async def bare(work: Case) -> float:
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
        rate = await within(done, proc)
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


async def flowstream(work: Case) -> float:
    """``ws.source`` (server mode) -> a counting sink, in stream mode."""
    registry = default_registry(entry_points=False)
    registry.register(ws_source)
    registry.register(count_sink)
    runtime = FlowRuntime(registry)
    loop = asyncio.get_running_loop()
    listening: asyncio.Future[Any] = loop.create_future()
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
    task: asyncio.Future[Any] = asyncio.ensure_future(executor.run())
    await asyncio.wait(
        {listening, task}, timeout=TIMEOUT_S, return_when="FIRST_COMPLETED"
    )
    if not listening.done():
        task.cancel()
        error = task.result().error if task.done() else "timed out"
        msg = f"ws.source did not start listening: {error}"
        raise RuntimeError(msg)
    proc = start_sender(listening.result(), work)
    try:
        rate = await within(Counter.done, proc)
    except BaseException:
        task.cancel()
        raise
    # The first frame's records are counted in the rate; a handful of bytes
    # in a run of millions of records.
    executor.stop()
    result = await task
    assert result.ok, result.error
    proc.wait(30)
    return rate


# --- running ---------------------------------------------------------------------


def cases(cfg: h.Config) -> list[Case]:
    one = cfg.size(200_000, 60_000)
    hundred = cfg.size(20_000, 6_000)
    return [
        Case("json", 1, one),
        Case("json", 100, hundred),
        Case("msgpack", 1, one),
        Case("msgpack", 100, hundred),
    ]


def case_label(work: Case) -> str:
    return f"{work.encoding}, {work.per_frame} rec/frame"


async def within(rate: Awaitable[float], proc: subprocess.Popen[bytes]) -> float:
    """Wait for the receiver's rate; a sender that dies or stalls fails the run."""
    try:
        return await asyncio.wait_for(rate, TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        msg = f"no rate after {TIMEOUT_S} s (sender exit code {proc.poll()})"
        raise RuntimeError(msg) from None


def run(cfg: h.Config) -> h.Workload:
    """Measure every case: ``repeat`` interleaved rounds of bare, then flowstream."""
    h.log(f"[{NAME}] ws.source (server) vs bare websockets + msgspec, loopback")
    rows: list[h.Row] = []
    for work in cases(cfg):
        rates: dict[str, list[float]] = {"bare": [], "flowstream": []}
        with receiver_pinned():
            for i in range(cfg.repeat):
                # Interleaved, so a burst of load on the machine hits both alike.
                rates["bare"].append(asyncio.run(bare(work)))
                rates["flowstream"].append(asyncio.run(flowstream(work)))
                h.log(
                    f"  {case_label(work)} round {i + 1}/{cfg.repeat}: "
                    f"bare {rates['bare'][-1]:,.0f}/s, "
                    f"flowstream {rates['flowstream'][-1]:,.0f}/s"
                )
        ceiling_rate = statistics.median(rates["bare"])
        ceiling = h.Row(
            name=f"bare loop ({case_label(work)})",
            role="ceiling",
            n=work.records,
            unit="records/s",
            value=ceiling_rate,
            times_s=[work.records / r for r in rates["bare"]],
            extra={"encoding": work.encoding, "records_per_frame": work.per_frame},
        )
        fs = h.Row(
            name=f"{h.FLOWSTREAM} ({case_label(work)})",
            role="flowstream",
            n=work.records,
            unit="records/s",
            value=statistics.median(rates["flowstream"]),
            times_s=[work.records / r for r in rates["flowstream"]],
            target=f">= {TARGET:.1f}x bare",
            extra={"encoding": work.encoding, "records_per_frame": work.per_frame},
        )
        ceiling.vs_floor = 1.0
        # Paired: each round's flowstream rate over the same round's bare one.
        fs.vs_floor, fs.vs_floor_range = h.paired_ratio(fs, ceiling)
        fs.status = "PASS" if fs.vs_floor >= TARGET else "MISS"
        rows += [ceiling, fs]
    w = h.Workload(
        name=NAME,
        title="(g) ws ingest: ws.source (server) vs a bare websockets+msgspec loop",
        unit="records/s",
        rows=rows,
    )
    w.extra["columns"] = WS_COLUMNS
    w.notes.append(
        f"median of {cfg.repeat} interleaved rounds; records/s from the first "
        "record received to the last, over loopback; the sender is a separate "
        "process on the other core writing pre-built frames"
    )
    w.notes.append(
        "vs bare = records/s over the bare loop's in the same round (the "
        "ceiling: the same recv(decode=False) + msgspec decode, and a count), "
        "median [min..max] of the rounds"
    )
    return w


WS_COLUMNS: list[tuple[str, Callable[[h.Row], str]]] = [
    ("contender", lambda r: r.name),
    ("records", lambda r: h._fmt_n(r.n)),
    ("median", lambda r: h._fmt_value(r.value, "items/s").replace("/s", " rec/s")),
    ("vs bare [min..max]", lambda r: h._fmt_ratio(r.vs_floor, r.vs_floor_range)),
    ("target", lambda r: r.target),
    ("result", lambda r: r.status),
]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--send"]:
        return sender_main(argv[1:])
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="where to write the results")
    args = p.parse_args(argv)
    cfg = h.config_from(args)
    w = run(cfg)
    h.print_workload(w)
    path = h.RESULTS_DIR / f"{NAME}.json" if args.json is None else Path(args.json)
    h.save_json([w], cfg, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
