"""Services under test: a workflow run by ``flowstream run`` in its own directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

STORE, JOURNAL, OUT_FILE = "ckpt.db", "journal.db", "out.jsonl"
STARTED: list[subprocess.Popen[bytes]] = []
"""Every service started, so that a soak that overruns can stop them all."""


def start(directory: Path, fault: str | None = None) -> subprocess.Popen[bytes]:
    """``flowstream run wf.json`` in ``directory`` (stderr to ``stderr.log``)."""
    env = {k: v for k, v in os.environ.items() if k != "FLOWSTREAM_FAULT"}
    if fault is not None:
        env["FLOWSTREAM_FAULT"] = fault
    with (directory / "stderr.log").open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowstream", "run", "wf.json"],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    STARTED.append(proc)
    return proc


def kill_all() -> None:
    """SIGKILL every service this soak started that still runs."""
    for proc in STARTED:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    STARTED.clear()


async def exited(proc: subprocess.Popen[bytes], limit: float) -> int | None:
    """Wait up to ``limit`` seconds for ``proc`` to exit; its code, or None."""
    deadline = time.monotonic() + limit
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.01)
    return proc.returncode


async def kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL ``proc`` if it still runs; True if this call killed it."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    await exited(proc, 30)
    return alive


async def drain(proc: subprocess.Popen[bytes], directory: Path) -> str | None:
    """Stop a service gracefully; a problem, or None if it exited cleanly."""
    proc.send_signal(signal.SIGTERM)
    code = await exited(proc, 60)
    if code == 0:
        return None
    await kill(proc)
    tail = (directory / "stderr.log").read_text(errors="replace")[-600:]
    return f"{directory.name}: the service exited with {code}: {tail}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the service binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the service accepts connections on ``port``."""
    deadline = time.monotonic() + 60
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
