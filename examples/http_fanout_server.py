"""A tiny local HTTP service for ``examples/batch_http.yaml``.

It answers two JSON endpoints about a fixed catalogue of SKUs:

* ``GET /prices/<sku>`` -> ``{"sku": ..., "price_cents": ...}``
* ``GET /stock/<sku>`` -> ``{"sku": ..., "stock": ...}``; the first request
  for ``/stock/C3`` fails with 503, to show the workflow's retry policy.

Run it, then the workflow, from the repository root::

    python -m examples.http_fanout_server          # serves on 127.0.0.1:8765
    flowstream run examples/batch_http.yaml
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterator

CATALOGUE = {
    "A1": {"price_cents": 250, "stock": 4},
    "B2": {"price_cents": 1000, "stock": 1},
    "C3": {"price_cents": 125, "stock": 8},
    "D4": {"price_cents": 400, "stock": 0},
}
FLAKY = {"/stock/C3"}


class FanoutServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}


class Handler(BaseHTTPRequestHandler):
    server: FanoutServer

    def do_GET(self) -> None:
        with self.server.lock:
            hits = self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        if self.path in FLAKY and hits == 1:
            self.reply(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "try again"})
            return
        parts = self.path.strip("/").split("/")
        kind, sku = parts if len(parts) == 2 else ("", "")
        item = CATALOGUE.get(sku)
        if kind == "prices" and item is not None:
            self.reply(HTTPStatus.OK, {"sku": sku, "price_cents": item["price_cents"]})
        elif kind == "stock" and item is not None:
            self.reply(HTTPStatus.OK, {"sku": sku, "stock": item["stock"]})
        else:
            self.reply(HTTPStatus.NOT_FOUND, {"error": f"no such thing: {self.path}"})

    def reply(self, status: HTTPStatus, body: Any) -> None:
        data = msgspec.json.encode(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the workflow's events say what happened


@contextlib.contextmanager
def running(port: int = 0) -> Iterator[str]:
    """Serve on 127.0.0.1 in a thread; yield the base URL; stop on exit."""
    server = FanoutServer(("127.0.0.1", port))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with running(args.port) as url:
        print(f"serving on {url} (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
