"""One local Ray for the whole pytest run, shut down (every process) at the end."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

ray = pytest.importorskip("ray", reason="the ray extra is part of dev")

_RAY_DAEMONS = ("raylet", "gcs_server")


def _daemons() -> set[int]:
    """The pids of Ray's raylet and GCS processes on this machine now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            continue
        if os.path.basename(argv0.decode(errors="replace")) in _RAY_DAEMONS:
            found.add(int(entry.name))
    return found


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    before = _daemons()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        log_to_driver=False,
    )
    ours = _daemons() - before
    assert ours, "ray.init started no raylet or GCS process"
    try:
        yield
    finally:
        ray.shutdown()
        deadline = time.monotonic() + 30
        while (left := ours & _daemons()) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling a condition with a deadline, not settling
        assert not left, f"Ray processes left after shutdown: {sorted(left)}"
