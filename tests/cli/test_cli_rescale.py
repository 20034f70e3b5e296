"""``kill -9`` of ``flowstream run`` mid-stream, then a restart at another parallelism.

The child SIGKILLs itself right after an epoch commits
(``FLOWSTREAM_FAULT=after_commit@E``), with keyed state open in every
instance. The restart, with the workflow file's ``parallelism`` changed,
must resume the same run (parallelism is not part of its identity), move
the state by key group, say so (an event, ``flowstream checkpoints``), and
end with every keyed count exact in the exactly-once file sink.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

N = 300_000
KEYS = 7


def workflow(tmp: Path, node: str, par: int) -> Path:
    store, out = tmp / "ckpt.db", tmp / "out.jsonl"
    if node == "scan":
        keyed = (
            f"{{id: count, type: transform.scan, parallelism: {par}, "
            f'config: {{op: count, key: "x % {KEYS}"}}}}'
        )
    else:
        keyed = (
            f"{{id: count, type: window.tumbling, parallelism: {par}, "
            f'config: {{key: "x % {KEYS}", time: event, timestamp: "x", '
            "size_ms: 700}}"
        )
    path = tmp / "wf.yaml"
    path.write_text(
        f"""
name: rescaled
mode: stream
checkpoint: {{path: {json.dumps(str(store))}, interval_ms: 5}}
nodes:
  - {{id: numbers, type: source.range, config: {{stop: {N}}}}}
  - {keyed}
  - {{id: sink, type: file.sink, config: {{path: {json.dumps(str(out))}}}}}
connections: ["numbers -> count", "count -> sink"]
"""
    )
    return path


def flowstream(
    *args: str, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLOWSTREAM_FAULT"}
    if fault is not None:
        env["FLOWSTREAM_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "flowstream", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def output(tmp: Path) -> list[dict[str, Any]]:
    lines = (tmp / "out.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 3)])
def test_keyed_counts_exact_after_kill_9_and_a_rescaled_restart(
    tmp_path: Path, before: int, after: int
) -> None:
    wf = workflow(tmp_path, "scan", before)
    killed = flowstream("run", str(wf), fault="after_commit@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    workflow(tmp_path, "scan", after)
    events = tmp_path / "events.jsonl"
    done = flowstream("run", str(wf), "--events", str(events))
    assert done.returncode == 0, done.stderr

    running: dict[int, list[int]] = defaultdict(list)
    for r in output(tmp_path):
        running[r["key"]].append(r["value"])
    assert sorted(running) == list(range(KEYS))
    for key, values in running.items():
        assert sorted(values) == list(range(1, len(range(key, N, KEYS)) + 1))

    if before == after:
        return
    moved = [
        e
        for line in events.read_text().splitlines()
        if (e := json.loads(line)).get("name") == "state.redistributed"
    ]
    assert len(moved) == 1
    assert moved[0]["node_id"] == "count"
    assert moved[0]["data"]["from"] == before
    assert moved[0]["data"]["to"] == after
    assert moved[0]["data"]["epoch"] >= 3
    listed = flowstream("checkpoints", str(tmp_path / "ckpt.db"))
    assert listed.returncode == 0, listed.stderr
    assert f"count: state redistributed from {before} to {after} instance(s)" in (
        listed.stdout
    )


def test_windows_exact_after_kill_9_and_a_rescaled_restart(tmp_path: Path) -> None:
    wf = workflow(tmp_path, "window", 2)
    killed = flowstream("run", str(wf), fault="after_commit@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    workflow(tmp_path, "window", 1)
    done = flowstream("run", str(wf))
    assert done.returncode == 0, done.stderr
    got = Counter((r["key"], r["start"], r["count"]) for r in output(tmp_path))
    # Windows of 700 ms over one item per ms: 100 of each key per window.
    want = Counter((k, start, 100) for start in range(0, N, 700) for k in range(KEYS))
    last = (N // 700) * 700  # the last window is cut short by the end
    for k in range(KEYS):
        del want[(k, last, 100)]
        want[(k, last, len(range(last + (k - last) % KEYS, N, KEYS)))] += 1
    assert got == want
