from __future__ import annotations

import asyncio
import time

from flowstream.core.workflow import RetryPolicy, Workflow
from flowstream.testing import run_virtual, run_workflow


def test_virtual_time_jumps_over_sleeps() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        await asyncio.gather(asyncio.sleep(10), asyncio.sleep(20))
        return start, loop.time()

    wall = time.perf_counter()
    start, end = run_virtual(main())
    assert end - start == 3620
    assert time.perf_counter() - wall < 5


def test_timer_source_on_virtual_time() -> None:
    wf = (
        Workflow("t")
        .node("tick", "source.timer", interval_ms=60_000, count=5)
        .node("out", "sink.collect")
        .connect("tick -> out")
    )

    async def main() -> tuple[list[int], float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await run_workflow(wf)
        return result.output("out"), loop.time() - start

    ticks, took = run_virtual(main())
    assert ticks == [0, 1, 2, 3, 4]
    assert took == 240.0


def test_retry_delays_on_virtual_time() -> None:
    wf = (
        Workflow("r")
        .node("src", "source.values", values=["a"])
        .node(
            "m",
            "transform.map",
            expr="x * 2",
            retry=RetryPolicy(max_attempts=3, delay_ms=1000, backoff_multiplier=3),
        )
        .connect("src -> m")
    )

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await run_workflow(wf)
        return result.status, loop.time() - start

    status, took = run_virtual(main())
    assert status == "failed"
    assert took == 4.0  # 1 s then 3 s between the three attempts
