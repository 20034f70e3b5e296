"""(j) Concurrent HTTP calls: 20 URLs that each take 100 ms, ``concurrency: 20``.

A real HTTP server on 127.0.0.1 (a free port, in a thread of its own) answers
every request after 100 ms. Floor: a hand-written ``asyncio.gather`` of the
same 20 GETs with one ``httpx.AsyncClient`` (the client ``http.request``
uses). flowstream: ``source.values`` (the 20 URLs) -> ``http.request`` with
``concurrency: 20`` -> ``sink.collect``; and, for information, the same with
the default one call at a time (about 20 x 100 ms).

Paired: the contenders alternate in every round (`measure`); each run has its
own event loop and client. Target: the concurrent run at least 0.5x the
floor's rate, that is near 0.1-0.2 s for the 20 calls, not 2 s.

``python -m benchmarks.bench_http [--quick] [--repeat N]``
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import threading
from typing import TYPE_CHECKING, Any

import httpx

from flowstream import FlowRuntime
from flowstream.core.workflow import Workflow

from . import _harness as h, _nodes

if TYPE_CHECKING:
    from collections.abc import Iterator

NAME = "http"
DELAY_S = 0.1
URLS = 20
CONCURRENCY = 20
TARGET = 0.5
_BODY = b'{"ok": true}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer each request on a connection after ``DELAY_S`` (keep-alive)."""
    try:
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")  # GETs: no body
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await asyncio.sleep(DELAY_S)
            writer.write(_RESPONSE)
            await writer.drain()
    finally:
        writer.close()


@contextlib.contextmanager
def slow_server() -> Iterator[str]:
    """Run the delaying server in a thread of its own; yield its base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        server = await asyncio.start_server(_answer, "127.0.0.1", 0, backlog=256)
        box["server"] = server
        box["port"] = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await server.serve_forever()

    def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(serve())

    thread = threading.Thread(target=main, name="bench-http-server", daemon=True)
    thread.start()
    if not started.wait(10):
        msg = "the benchmark's HTTP server did not start within 10 s"
        raise RuntimeError(msg)
    try:
        yield f"http://127.0.0.1:{box['port']}/slow"
    finally:
        loop.call_soon_threadsafe(box["server"].close)
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        thread.join(10)
        loop.close()


def expected(n: int) -> int:
    return n  # every call answered 200


def gather_floor(url: str) -> Any:
    async def run(n: int) -> int:
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits) as client:
            responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
        return sum(r.status_code == 200 for r in responses)

    return run


@functools.cache
def runtime() -> FlowRuntime:
    return FlowRuntime(_nodes.registry())


def workflow(url: str, n: int, concurrency: int) -> Workflow:
    wf = Workflow(f"http-{concurrency}").node("src", "source.values", values=[url] * n)
    wf.node("get", "http.request", url=url, concurrency=concurrency)
    wf.node("out", "sink.collect")
    return wf.connect("src -> get").connect("get -> out")


def flowstream_run(url: str, concurrency: int) -> Any:
    async def run(n: int) -> int:
        result = await runtime().arun(workflow(url, n, concurrency))
        if not result.ok:
            raise RuntimeError(result.error)
        return sum(r["status"] == 200 for r in result.output("out"))

    return run


def run(cfg: h.Config) -> h.Workload:
    repeat = cfg.repeat if not cfg.quick else max(3, cfg.repeat)
    h.log(f"[{NAME}] {URLS} URLs x {DELAY_S * 1000:.0f} ms, concurrency {CONCURRENCY}")
    with slow_server() as url:
        c = h.Contender
        cs = [
            c("floor (asyncio.gather)", "floor", gather_floor(url), URLS, warm_n=URLS),
            c(
                h.FLOWSTREAM,
                "flowstream",
                flowstream_run(url, CONCURRENCY),
                URLS,
                note=f"http.request, concurrency: {CONCURRENCY}",
                warm_n=URLS,
            ),
            c(
                "flowstream, one call at a time",
                "info",
                flowstream_run(url, 1),
                URLS,
                note="the default concurrency: 1",
                warm_n=2,
            ),
        ]
        times = h.measure(cs, expected, repeat)
    rows = h.throughput_rows(cs, times)
    h.apply_throughput_targets(rows, h.FLOWSTREAM, {h.FLOWSTREAM: TARGET}, {})
    for r in rows:
        if r.times_s:
            ts = sorted(r.times_s)
            r.note = (
                f"{ts[len(ts) // 2]:.3f} s for {URLS} calls "
                f"[{ts[0]:.3f}..{ts[-1]:.3f}]" + (f"; {r.note}" if r.note else "")
            )
    w = h.Workload(
        name=NAME,
        title=f"(j) {URLS} HTTP calls of {DELAY_S * 1000:.0f} ms each, concurrency "
        f"{CONCURRENCY}",
        unit="items/s",
        rows=rows,
    )
    w.notes.append(
        f"median of {repeat} interleaved rounds; a real server on 127.0.0.1 that "
        f"answers after {DELAY_S * 1000:.0f} ms; each run opens its own client"
    )
    return w


def main(argv: list[str] | None = None) -> None:
    p = h.parser("(j) concurrent HTTP calls")
    args = p.parse_args(argv)
    cfg = h.config_from(args)
    w = run(cfg)
    h.print_workload(w)
    h.save_json([w], cfg, h.RESULTS_DIR / f"{NAME}.json")


if __name__ == "__main__":
    main(sys.argv[1:])
