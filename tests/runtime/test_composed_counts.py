"""A composed chain's counts derived next to plain maps equal counted ones.

`flowstream.runtime.local.composed` counts the items between two user
generators only where neither is a plain map (`runtime.shapes`); next to a
map it derives them. Every chain of three from maps, filters, failing ones,
an expanding, a stopping and a waiting generator must give the same result
and the same per-node counts as with every edge counted, and (when it ends
well) as unfused, where each node is counted by its own channel.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.runtime.local import composed
from flowstream.runtime.local.stages import MAX_BATCH
from flowstream.runtime.shapes import item_shape

from . import _chain_nodes as k

TYPES = ("k.inc", "k.inv", "k.odd", "k.sift", "k.dup", "k.head")


@pytest.fixture(autouse=True)
def generators(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chains run as generators: lifted maps and filters are kernels."""
    monkeypatch.setenv("FLOWSTREAM_LIFT", "0")


@pytest.fixture
def runtime() -> FlowRuntime:
    reg = default_registry(entry_points=False)
    for spec in k.NODES:
        reg.register(spec)
    return FlowRuntime(reg)


def chain(types: tuple[str, ...], stop: int = 30) -> Workflow:
    wf = Workflow("chain").node("src", "source.range", stop=stop)
    prev = "src"
    for i, t in enumerate(types):
        wf.node(f"n{i}", t).connect(f"{prev} -> n{i}")
        prev = f"n{i}"
    return wf.node("out", "sink.collect").connect(f"{prev} -> out")


def outcome(result: Any, n: int) -> tuple[Any, ...]:
    stats = result.stats
    counts = [
        (stats[f"n{i}"].items_in, stats[f"n{i}"].items_out, stats[f"n{i}"].errors)
        for i in range(n)
    ]
    return result.status, result.error, result.output("out"), counts


def test_the_nodes_have_the_shapes_the_chains_rely_on() -> None:
    shapes = [item_shape(spec.fn) for spec in (k.inc, k.inv, k.odd, k.sift)]
    assert shapes == ["map", "map", "filter", "filter"]
    assert [item_shape(spec.fn) for spec in (k.dup, k.head, k.pause)] == [None] * 3


async def test_derived_counts_equal_counted_ones(
    runtime: FlowRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    chains = [*itertools.product(TYPES, repeat=3), ("k.pause", "k.inc", "k.odd")]
    chains += [("k.inc", "k.pause", "k.inc"), ("k.odd", "k.inc", "k.pause")]
    derived = {c: outcome(await runtime.arun(chain(c)), 3) for c in chains}
    monkeypatch.setattr(composed, "item_shape", lambda fn: None)
    for c in chains:
        counted = outcome(await runtime.arun(chain(c)), 3)
        assert derived[c] == counted, c
    failed = [c for c in chains if derived[c][0] == "failed"]
    assert 0 < len(failed) < len(chains)  # both kinds were tried


@pytest.mark.parametrize(
    "types",
    [
        ("k.inc", "k.odd", "k.inc"),
        ("k.odd", "k.odd", "k.inc", "k.inc"),
        ("k.inc", "k.dup", "k.inc", "k.odd", "k.inc"),
        ("k.pause", "k.inc", "k.inc"),
    ],
)
async def test_derived_counts_equal_unfused_ones(
    runtime: FlowRuntime, types: tuple[str, ...]
) -> None:
    fused = await runtime.arun(chain(types, stop=3000))
    unfused = await runtime.arun(chain(types, stop=3000), fuse=False)
    assert fused.ok, fused.error
    assert outcome(fused, len(types)) == outcome(unfused, len(types))


async def test_a_chain_of_maps_leaves_bounded_batches(runtime: FlowRuntime) -> None:
    # One batch of 5000 into inc -> odd -> inc (no bound check of their
    # own): what leaves is cut into batches of at most MAX_BATCH.
    k.SIZES.clear()
    wf = chain(("k.lump", "k.inc", "k.odd", "k.inc", "k.sizes"), stop=5000)
    result = await runtime.arun(wf)
    assert result.ok, result.error
    assert len(result.output("out")) == 2500
    assert sum(k.SIZES) == 2500
    assert max(k.SIZES) <= MAX_BATCH
    assert result.stats["n1"].items_in == 5000
    assert result.stats["n2"].items_out == result.stats["n3"].items_in == 2500
