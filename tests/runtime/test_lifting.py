"""Lifted user generators (`runtime.lifting`) behave exactly as generators.

A user ``@node`` generator that is a plain map or filter runs as a per-item
function through the batch kernels. Every test here runs the same workflow
lifted and with ``FLOWSTREAM_LIFT=0`` (the generator path) and requires the
same outcome: outputs, per-node counts, dead letters, the run's error.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from flowstream import FlowRuntime, Workflow, default_registry
from flowstream.cli import cli
from flowstream.core.kernels import ItemKernel
from flowstream.core.policies import (
    Checkpoint,
    ContinueOnError,
    ErrorHandling,
    RetryPolicy,
)
from flowstream.runtime import lifting
from flowstream.runtime.plan import describe, plan

from . import _lift_nodes as ln

if TYPE_CHECKING:
    from pathlib import Path


def runtime() -> FlowRuntime:
    reg = default_registry(entry_points=False)
    for spec in ln.NODES:
        reg.register(spec)
    return FlowRuntime(reg)


def chain(
    types: tuple[str, ...],
    *,
    stop: int = 30,
    handling: ErrorHandling | None = None,
    retry: RetryPolicy | None = None,
    fuse: bool = True,
) -> Workflow:
    wf = Workflow("chain").node("src", "source.range", stop=stop)
    prev = "src"
    for i, t in enumerate(types):
        wf.node(f"n{i}", t, error_handling=handling, retry=retry, fuse=fuse)
        wf.connect(f"{prev} -> n{i}")
        prev = f"n{i}"
    return wf.node("out", "sink.collect").connect(f"{prev} -> out")


def outcome(result: Any) -> tuple[Any, ...]:
    stats = {
        gid: (s.items_in, s.items_out, s.errors) for gid, s in result.stats.items()
    }
    letters = [msgspec.structs.asdict(d) for d in result.dead_letters]
    out = result.output("out") if "out" in result.outputs else None
    return result.status, result.error, out, stats, letters


def both(
    monkeypatch: pytest.MonkeyPatch, make: Any, **options: Any
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The outcome of ``make(fuse)`` lifted, then as generators.

    A run that completes must agree in everything. A run that a failure
    stopped must agree in its error (node, item, reason) and dead letters;
    what it handed on before the failure differs by design (a kernel fails a
    batch as a whole, a generator after the items before it), and even the
    generator path differs there fused and unfused. Its error is compared
    with the unfused generator run, which names each node's own failure
    (see `test_a_failure_names_the_nodes_own_item`).
    """
    monkeypatch.delenv(lifting.ENV, raising=False)
    lifted = outcome(runtime().run(make(True), **options))
    monkeypatch.setenv(lifting.ENV, "0")
    kept = outcome(runtime().run(make(True), **options))
    if kept[0] == "failed" or lifted[0] == "failed":
        kept = outcome(runtime().run(make(False), **options))
        kept = (*kept[:2], None, None, kept[4])
        lifted = (*lifted[:2], None, None, lifted[4])
    monkeypatch.delenv(lifting.ENV)
    return lifted, kept


async def no_sleep(_: float) -> None:
    return None


# --- what is lifted ----------------------------------------------------------


def test_maps_and_filters_are_lifted_the_rest_says_why_not() -> None:
    kinds = {spec.type_id: lifting.lift(spec).kind for spec in ln.LIFTED}
    assert kinds == {
        "l.double": "map",
        "l.offset": "map",
        "l.scale": "map",
        "l.pair": "map",
        "l.mul": "map",
        "l.inv": "map",
        "l.odd": "filter",
        "l.big_tens": "filter",
        "l.sift": "filter",
        "l.pick": "filter",
        "l.stop_at_5": "map",
        "l.key_of": "map",
        "l.record": "map",
        "l.comprehension": "map",
        "l.noted": "map",
        "l.closure": "map",
        "l.flaky": "map",
    }
    assert lifting.lift(ln.odd).projects is False
    assert lifting.lift(ln.big_tens).projects is True
    assert lifting.lift(ln.pick).projects is True
    why = {spec.type_id: lifting.lift(spec).why_not for spec in ln.NOT_LIFTED}
    assert why == {
        "l.running": "not a plain map or filter (its body is Assign, AsyncFor)",
        "l.guarded": "its loop sits in a try/finally",
        "l.with_ctx": "takes ctx",
        "l.thunk": "captures its loop variable in a lambda or generator",
        "l.frame": "calls locals(), which depends on the frame",
        "l.reads_input": "reads its input 'inp' per item",
        "l.noted_kept": "lift=False",
    }
    assert all(lifting.lifted_kernel(spec) is None for spec in ln.NOT_LIFTED)


def test_the_env_switch_turns_lifting_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert lifting.lifted_kernel(ln.double) is not None
    monkeypatch.setenv(lifting.ENV, "0")
    assert lifting.lifted_kernel(ln.double) is None


def test_the_function_runs_in_the_users_file_and_lines() -> None:
    factory = lifting.lifted_kernel(ln.inv)
    assert factory is not None
    kernel = factory(None)
    assert isinstance(kernel, ItemKernel)
    assert kernel([8, 9]) == [60, 30]
    with pytest.raises(ZeroDivisionError) as caught:
        kernel([7])
    last = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert last.filename == ln.__file__
    assert last.name == "inv"
    assert last.line == "yield 60 // (x - 7)"


def test_a_closure_is_read_through_the_same_cell() -> None:
    factory = lifting.lifted_kernel(ln.closure)
    assert factory is not None
    kernel = factory(None)
    try:
        ln.set_closure_factor(5)
        assert kernel([1, 2]) == [5, 10]
        ln.set_closure_factor(2)  # late binding: the same kernel sees it
        assert kernel([1, 2]) == [2, 4]
    finally:
        ln.set_closure_factor(5)


def test_config_is_bound_as_the_generator_sees_it() -> None:
    factory = lifting.lifted_kernel(ln.scale)
    assert factory is not None
    assert factory(ln.Scale(factor=4))([1, 2]) == [4, 8]


def test_plan_says_lifted_or_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = chain(("l.double", "l.big_tens", "l.running", "l.with_ctx"))
    shown = describe(plan(runtime().validate(wf)))
    assert shown["lifting"] == [
        {"node": "n0", "type": "l.double", "runs": "lifted: map"},
        {"node": "n1", "type": "l.big_tens", "runs": "lifted: filter"},
        {
            "node": "n2",
            "type": "l.running",
            "runs": "not lifted: not a plain map or filter "
            "(its body is Assign, AsyncFor)",
        },
        {"node": "n3", "type": "l.with_ctx", "runs": "not lifted: takes ctx"},
    ]
    monkeypatch.setenv(lifting.ENV, "0")
    shown = describe(plan(runtime().validate(wf)))
    assert shown["lifting"][0]["runs"] == "not lifted: FLOWSTREAM_LIFT=0 (a map)"


def test_the_plan_command_prints_it(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "name: w\nnodes:\n"
        "  - {id: src, type: source.range, config: {stop: 3}}\n"
        "  - {id: d, type: 'tests.runtime._lift_nodes:double'}\n"
        "  - {id: out, type: sink.collect}\n"
        "connections: ['src -> d', 'd -> out']\n"
    )
    got = CliRunner().invoke(cli, ["plan", str(path)])
    assert got.exit_code == 0, got.output
    assert "generator d (l.double): lifted: map" in got.output, got.output


# --- same outcome, lifted or not ----------------------------------------------

CHAINS = [
    ("l.double", "l.odd", "l.offset"),
    ("l.pair", "l.mul", "l.big_tens"),
    ("l.inv", "l.odd"),
    ("l.double", "l.sift", "l.double"),
    ("l.pair", "l.pick", "l.scale"),
    ("l.record", "l.key_of"),
    ("l.mul",),
    ("l.stop_at_5", "l.double"),
    ("l.comprehension",),
    ("l.running", "l.inv", "l.odd"),
    ("l.double", "l.guarded", "l.big_tens", "l.running"),
    ("l.odd", "l.big_tens", "l.closure"),
]
POLICIES: dict[str, dict[str, Any]] = {
    "stop": {},
    "continue": {"handling": ContinueOnError()},
    "retry-stop": {"retry": RetryPolicy(max_attempts=3, delay_ms=0)},
    "retry-continue": {
        "retry": RetryPolicy(max_attempts=2, delay_ms=0),
        "handling": ContinueOnError(),
    },
}


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("types", CHAINS, ids="-".join)
def test_lifted_and_generator_runs_agree(
    monkeypatch: pytest.MonkeyPatch, types: tuple[str, ...], policy: str, fuse: bool
) -> None:
    def make(fused: bool) -> Workflow:
        return chain(types, fuse=fuse and fused, **POLICIES[policy])

    lifted, kept = both(monkeypatch, make, sleep=no_sleep)
    assert lifted == kept


def test_failures_name_the_node_and_item_as_generators_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lifted, kept = both(monkeypatch, lambda f: chain(("l.inv", "l.double"), fuse=f))
    assert lifted == kept
    assert lifted[0] == "failed"
    assert lifted[1] == (
        "node 'n0' (l.inv) failed on item 7: ZeroDivisionError: "
        "integer division or modulo by zero"
    )
    lifted, kept = both(monkeypatch, lambda f: chain(("l.stop_at_5",), fuse=f))
    assert lifted == kept
    assert lifted[1] == (
        "node 'n0' (l.stop_at_5) failed on item 5: "
        "RuntimeError: async generator raised StopIteration"
    )


def test_dead_letters_carry_the_item_and_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lifted, kept = both(
        monkeypatch,
        lambda f: chain(("l.mul",), stop=3, handling=ContinueOnError(), fuse=f),
    )
    assert lifted == kept
    letters = lifted[4]
    assert [d["item"] for d in letters] == [0, 1, 2]
    assert {d["reason"] for d in letters} == {
        "TypeError: cannot unpack non-iterable int object"
    }


def test_globals_changed_between_runs_are_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ln, "OFFSET", 100)
    first, kept = both(monkeypatch, lambda f: chain(("l.offset",), stop=3, fuse=f))
    assert first == kept
    assert first[2] == [100, 101, 102]
    monkeypatch.setattr(ln, "OFFSET", 7)
    second, kept = both(monkeypatch, lambda f: chain(("l.offset",), stop=3, fuse=f))
    assert second == kept
    assert second[2] == [7, 8, 9]


def test_closures_changed_between_runs_are_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        ln.set_closure_factor(3)
        lifted, kept = both(
            monkeypatch, lambda f: chain(("l.closure",), stop=3, fuse=f)
        )
        assert lifted == kept
        assert lifted[2] == [0, 3, 6]
    finally:
        ln.set_closure_factor(5)


def test_each_item_is_seen_once_on_a_clean_run(monkeypatch: pytest.MonkeyPatch) -> None:
    ln.SEEN.clear()
    lifted, kept = both(
        monkeypatch, lambda f: chain(("l.noted", "l.odd"), stop=5, fuse=f)
    )
    assert lifted == kept
    assert ln.SEEN == [0, 1, 2, 3, 4] * 2


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("policy", ["continue", "retry-stop", "retry-continue"])
def test_each_item_is_evaluated_as_often_as_by_the_generator(
    monkeypatch: pytest.MonkeyPatch, policy: str, fuse: bool
) -> None:
    """A failure is the failing node's first attempt; nothing else runs again.

    ``l.flaky`` fails once on each multiple of 5: its calls, and those of
    the map before it, must be the generator's, item by item.
    """
    runs = []
    for lift in ("1", "0"):
        monkeypatch.setenv(lifting.ENV, lift)
        ln.SEEN.clear()
        ln.CALLS.clear()
        ln.FAILED_ONCE.clear()
        wf = chain(("l.noted", "l.flaky", "l.odd"), fuse=fuse, **POLICIES[policy])
        result = runtime().run(wf, sleep=no_sleep)
        runs.append((outcome(result), list(ln.SEEN), list(ln.CALLS)))
    assert runs[0] == runs[1]
    (status, _, out, _, letters), seen, calls = runs[0]
    assert status == "completed"
    assert seen == list(range(30))
    if policy == "continue":
        assert letters
        assert calls == list(range(30))
    else:
        assert not letters
        assert calls == sorted([*range(30), *range(0, 30, 5)])
        assert out == [x for x in range(30) if x % 2]


@pytest.mark.parametrize("mode", ["stream", "dag"])
@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_checkpointed_runs_agree(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str, policy: str
) -> None:
    stores = iter(tmp_path / f"{i}.db" for i in range(3))

    def make(fused: bool) -> Workflow:
        wf = chain(("l.inv", "l.double", "l.big_tens"), fuse=fused, **POLICIES[policy])
        wf.mode = mode  # type: ignore[assignment]
        wf.checkpoint = Checkpoint(path=str(next(stores)), interval_ms=1)
        return wf

    lifted, kept = both(monkeypatch, make)
    assert lifted == kept
    assert lifted[0] == ("failed" if policy == "stop" else "completed")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    types=st.lists(
        st.sampled_from(
            [
                "l.double",
                "l.offset",
                "l.scale",
                "l.inv",
                "l.odd",
                "l.big_tens",
                "l.sift",
                "l.stop_at_5",
                "l.closure",
                "l.running",
                "l.guarded",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    policy=st.sampled_from(list(POLICIES)),
    stop=st.integers(0, 40),
    fuse=st.booleans(),
)
def test_any_chain_agrees(
    monkeypatch: pytest.MonkeyPatch,
    types: list[str],
    policy: str,
    stop: int,
    fuse: bool,
) -> None:
    def make(fused: bool) -> Workflow:
        return chain(tuple(types), stop=stop, fuse=fuse and fused, **POLICIES[policy])

    lifted, kept = both(monkeypatch, make, sleep=no_sleep)
    assert lifted == kept


def test_a_failure_names_the_nodes_own_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lifted, a failure names its node and that node's input, as unfused.

    (Composed generators, fused and not lifted, name the chain's input item
    instead, and blame a StopIteration on the node that read it.)
    """
    lifted, kept = both(monkeypatch, lambda f: chain(("l.record", "l.key_of"), fuse=f))
    assert lifted == kept
    assert lifted[1] == (
        "node 'n1' (l.key_of) failed on item {\"j\":0}: KeyError: 'k' is missing"
    )
    lifted, kept = both(
        monkeypatch, lambda f: chain(("l.stop_at_5", "l.double"), fuse=f)
    )
    assert lifted == kept
    assert "node 'n0' (l.stop_at_5) failed on item 5" in lifted[1]


def test_a_builtin_callable_is_not_called_again_before_a_failing_item() -> None:
    """The kernel path goes on from a failing item (`stages.resume_items`)."""
    calls: list[int] = []

    def inverse(x: int) -> float:
        calls.append(x)
        return 1 / (x - 3)

    wf = (
        Workflow("w")
        .node("src", "source.range", stop=6)
        .node("m", "transform.map", fn=inverse, error_handling=ContinueOnError())
        .node("out", "sink.collect")
        .connect("src -> m")
        .connect("m -> out")
    )
    result = runtime().run(wf)
    assert result.ok, result.error
    assert len(result.output("out")) == 5
    assert [d.item for d in result.dead_letters] == [3]
    assert (result.stats["m"].items_in, result.stats["m"].items_out) == (6, 5)
    # Once each, the failing item once more (its attempt under the policy).
    assert calls == [0, 1, 2, 3, 3, 4, 5]
