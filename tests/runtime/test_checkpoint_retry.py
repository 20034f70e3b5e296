"""``retry_workflow`` in checkpointed stream runs: a retry resumes from the last epoch.

A retry is a restart in the same process: it must start where a restart
against the store would, from the last committed epoch. Started from the
epoch the run began with instead, the exactly-once sinks (a file, a keyless
table) would hold every record written since then twice.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Any

import msgspec

from flowstream import FlowRuntime, Workflow, default_registry, node
from flowstream.core.events import NodeFailed
from flowstream.core.workflow import Checkpoint, RetryWorkflow

if TYPE_CHECKING:
    from pathlib import Path

N = 5000


class Flaky(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    at: int  # the record that fails, the first time only


SEEN: list[int] = []


@node("retry.flaky", config=Flaky)
def flaky(x: dict[str, int], *, config: Flaky) -> dict[str, int]:
    SEEN.append(x["id"])
    if x["id"] == config.at and SEEN.count(x["id"]) == 1:
        msg = f"record {x['id']} hit a flaky node"
        raise RuntimeError(msg)
    return x


def pipeline(out: Path, store: Path | None, fail_at: int = -1) -> Workflow:
    wf = (
        Workflow("retried", mode="stream")
        .node("src", "source.range", stop=N)
        # Paced, so that epochs commit before the failure.
        .node("pace", "transform.throttle", rate=1000, per_ms=100, burst=256)
        .node("rec", "transform.map", expr="{'id': x, 'k': x % 7}")
        .node("check", "retry.flaky", at=fail_at)
        .node("per_key", "transform.scan", op="count", key="x.k", value="x")
        .node("agg", "sqlite.sink", path=str(out / "t.db"), table="agg", key="key")
        .node("rows", "sqlite.sink", path=str(out / "t.db"), table="rows")
        .node("lines", "file.sink", path=str(out / "rows.jsonl"))
        .connect("src -> pace")
        .connect("pace -> rec")
        .connect("rec -> check")
        .connect("check -> per_key")
        .connect("per_key -> agg")
        .connect("check -> rows")
        .connect("check -> lines")
    )
    wf.error_handling = RetryWorkflow(max_attempts=2)
    if store is not None:
        wf.checkpoint = Checkpoint(path=str(store), interval_ms=10)
    return wf


def contents(out: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(out / "t.db")) as conn:
        agg = sorted(conn.execute("select key, value from agg"))
        rows = sorted(conn.execute("select id, k from rows"))
    lines = sorted(
        json.dumps(json.loads(line), sort_keys=True)
        for line in (out / "rows.jsonl").read_text().splitlines()
    )
    return {"agg": agg, "rows": rows, "lines": lines}


def runtime() -> FlowRuntime:
    registry = default_registry()  # the connectors' sinks
    registry.register(flaky)
    return FlowRuntime(registry)


def test_a_retry_resumes_from_the_last_epoch_and_the_sinks_stay_exact(
    tmp_path: Path,
) -> None:
    plain, retried = tmp_path / "plain", tmp_path / "retried"
    plain.mkdir()
    retried.mkdir()
    SEEN.clear()
    assert runtime().run(pipeline(plain, None)).ok  # no failure
    expected = contents(plain)
    assert len(expected["rows"]) == len(expected["lines"]) == N

    SEEN.clear()
    failures: list[Any] = []
    rt = runtime()
    rt.bus.add_listener(
        lambda e: failures.append(e) if isinstance(e, NodeFailed) else None
    )
    result = rt.run(pipeline(retried, tmp_path / "ckpt.db", fail_at=N // 2))
    assert result.ok, result.error
    assert result.attempts == 2
    assert len(failures) == 1
    assert contents(retried) == expected  # nothing twice, nothing lost
    # The retry resumed after the records of the epochs committed before the
    # failure: fewer than the first half were seen again.
    assert len(SEEN) < N + N // 2
