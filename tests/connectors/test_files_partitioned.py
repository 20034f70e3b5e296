"""``file.source`` with ``parallelism: N``: byte ranges aligned to line starts.

Each instance reads the lines that start in its part of the file; together
they read every line once, so the records (and the bad lines, with their
line numbers in the whole file) are those of one instance. The parts are
fixed in each instance's state, so a run killed with ``kill -9`` resumes
exactly; a part cannot be cut again at another parallelism, which is refused
by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.errors import WorkflowValidationError
from flowstream.runtime.plan import describe, plan
from flowstream.runtime.validation import validate

if TYPE_CHECKING:
    from pathlib import Path


def canon(items: list[Any]) -> Counter[bytes]:
    enc = msgspec.json.Encoder(order="deterministic")
    return Counter(enc.encode(x) for x in items)


def read(path: Path, par: int, **config: Any) -> tuple[list[Any], list[Any]]:
    wf = (
        Workflow("read")
        .node("src", "file.source", path=str(path), parallelism=par, **config)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    result = FlowRuntime().run(wf)
    assert result.ok, result.error
    letters = [(d.item["line"], d.reason) for d in result.dead_letters]
    return result.output("out"), letters


def write_jsonl(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            if i % 997 == 5:
                f.write("{not json\n")  # a bad line, with its number
            elif i % 101 == 3:
                f.write("\n")  # blank: skipped
            else:
                f.write(json.dumps({"i": i, "pad": "x" * (i % 41)}) + "\n")
        f.write('{"last": true}')  # no line break at the end


@pytest.mark.parametrize("par", [2, 3, 7])
def test_the_instances_read_every_line_once(tmp_path: Path, par: int) -> None:
    path = tmp_path / "in.jsonl"
    write_jsonl(path, 20_000)
    one, one_bad = read(path, 1)
    many, many_bad = read(path, par)
    assert canon(many) == canon(one)
    assert len(one) > 19_000
    assert sorted(many_bad) == sorted(one_bad)  # same line numbers, same reasons
    assert len(one_bad) == 21


def test_csv_parts_use_the_header_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(3000)))
    one, _ = read(path, 1)
    many, _ = read(path, 4)
    assert canon(many) == canon(one)
    assert {"a": "2999", "b": "5998"} in many


def test_more_instances_than_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"x": 1}\n{"x": 2}\n')
    many, _ = read(path, 5)
    assert sorted(r["x"] for r in many) == [1, 2]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert read(empty, 3) == ([], [])


def test_validation_and_plan_say_what_a_split_source_does(tmp_path: Path) -> None:
    wf = (
        Workflow("read")
        .node("src", "file.source", path="in.jsonl", follow=True, parallelism=2)
        .node("out", "sink.collect")
        .connect("src -> out")
    )
    with pytest.raises(WorkflowValidationError) as info:
        validate(wf, default_registry())
    assert "node 'src', parallelism: cannot run 2 instances: a followed file" in (
        str(info.value)
    )
    wf.nodes[0].config.pop("follow")
    shown = describe(plan(validate(wf, default_registry())))
    assert shown["parallel"]["nodes"]["src"] == {
        "parallelism": 2,
        "instances": ["src[0]", "src[1]"],
        "reads": "each instance reads its own part of the input",
    }
    # A source whose input does not split still says why.
    wf.nodes[0] = msgspec.structs.replace(
        wf.nodes[0], type="source.range", config={"stop": 3}
    )
    with pytest.raises(WorkflowValidationError, match="a source runs one instance"):
        validate(wf, default_registry())


def workflow(tmp: Path, par: int) -> Path:
    store, out, data = tmp / "ckpt.db", tmp / "out.jsonl", tmp / "in.jsonl"
    path = tmp / "wf.yaml"
    path.write_text(
        f"""
name: split-read
mode: stream
checkpoint: {{path: {json.dumps(str(store))}, interval_ms: 5}}
nodes:
  - {{id: src, type: file.source, parallelism: {par},
      config: {{path: {json.dumps(str(data))}}}}}
  - {{id: sink, type: file.sink, config: {{path: {json.dumps(str(out))}}}}}
connections: ["src -> sink"]
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


def test_kill_9_then_resume_reads_every_line_once(tmp_path: Path) -> None:
    n = 200_000
    with (tmp_path / "in.jsonl").open("w") as f:
        f.writelines(f'{{"i": {i}}}\n' for i in range(n))
    wf = workflow(tmp_path, 2)
    # Epoch 1 is a periodic one (the run takes ~20 intervals): the kill lands
    # mid-stream, not after the final epoch (which also completes the run).
    killed = flowstream("run", str(wf), fault="after_commit@1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    listing = flowstream("checkpoints", str(tmp_path / "ckpt.db")).stdout
    assert "running" in listing, listing

    # The parts were cut for 2 instances: 3 cannot take them over.
    workflow(tmp_path, 3)
    refused = flowstream("run", str(wf))
    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "node 'src' (file.source): cannot move its state from 2 to 3" in said
    assert "restart it with parallelism: 2" in said

    workflow(tmp_path, 2)
    done = flowstream("run", str(wf))
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert Counter(json.loads(line)["i"] for line in lines) == Counter(range(n))
