"""``make tour``: flowstream end to end on embedded defaults, no outside services.

1. A workflow file is validated and run in DAG mode; its outputs are printed.
2. The same kind of graph is built in Python, with a node written as a
   five-line async generator.
3. A stream-mode run ticks for a few seconds, shows live progress, then is
   stopped gracefully and drains.
4. A broken workflow file (examples/broken.yaml) is checked by
   ``flowstream validate``, which names every problem at once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from flowstream import FlowRuntime, Workflow, default_registry, read_workflow

from .my_nodes import running_mean

HERE = Path(__file__).parent


def banner(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 70 - len(text)))


async def main() -> None:
    registry = default_registry()
    registry.register(running_mean)
    runtime = FlowRuntime(registry)

    banner("1. a YAML workflow, DAG mode (examples/numbers.yaml)")
    print((HERE / "numbers.yaml").read_text().strip())
    result = await runtime.arun(read_workflow(HERE / "numbers.yaml"))
    print(f"-> {result.status} in {result.duration_s * 1000:.2f} ms: {result.outputs}")

    banner("2. the same idea in Python, one million items, with a Python node")
    wf = (
        Workflow("million")
        .node("numbers", "source.range", stop=1_000_000)
        .node("negate", "transform.map", fn="operator:neg")
        .node("keep", "transform.filter", expr="x % 3 != 0")
        .node("mean", "example.running_mean")
        .node("last", "sink.collect")
        .connect("numbers -> negate")
        .connect("negate -> keep")
        .connect("keep -> mean")
        .connect("mean -> last")
    )
    started = time.perf_counter()
    result = await runtime.arun(wf)
    elapsed = time.perf_counter() - started
    means = result.output("last")
    print(
        f"-> {result.status}: {len(means):,} running means, last {means[-1]:.1f}, "
        f"{1_000_000 / elapsed:,.0f} items/s through 4 nodes"
    )

    banner("3. stream mode: a timer for 2 seconds, then a graceful stop")
    ticks = (
        Workflow("ticks", mode="stream")
        .node("tick", "source.timer", interval_ms=10)
        .node("square", "transform.map", expr="x * x")
        .node("mean", "example.running_mean")
        .node("sink", "sink.collect")
        .connect("tick -> square")
        .connect("square -> mean")
        .connect("mean -> sink")
    )
    executor = runtime.executor(ticks)
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(executor.run())
        for second in range(4):
            await asyncio.sleep(0.5)
            counts = {k: v.items_out for k, v in executor.statistics().items()}
            print(f"   t={0.5 * (second + 1):.1f}s items out per node: {counts}")
        executor.stop()
    result = run.result()
    print(
        f"-> {result.status} after stop: {result.stats['tick'].items_out} ticks, "
        f"all {len(result.output('sink'))} reached the sink (drained)"
    )


def validate_broken() -> None:
    banner("4. a broken workflow: every problem named at once")
    print("$ .venv/bin/flowstream validate examples/broken.yaml")
    # The command line itself, so this prints what the README shows.
    checked = subprocess.run(
        [sys.executable, "-m", "flowstream", "validate", "examples/broken.yaml"],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    print(checked.stderr.rstrip())
    print(f"(exit {checked.returncode})")
    print(
        "\ntour finished: try `.venv/bin/flowstream run examples/numbers.yaml` "
        "and `make test`"
    )


if __name__ == "__main__":
    asyncio.run(main())
    validate_broken()
    sys.exit(0)
