"""The committed example modules: the AssemblyScript build and the workflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.wasm import open_sandbox
from flowstream import FlowRuntime, Limits, read_workflow
from flowstream.errors import SandboxError

ROOT = Path(__file__).resolve().parents[3]
AS_WASM = str(ROOT / "examples" / "wasm" / "assemblyscript" / "arith.wasm")


def test_the_assemblyscript_build_imports_nothing_and_computes():
    box = open_sandbox(AS_WASM, "double_plus_one", Limits(memory_pages=4))
    assert box.compiled.imports == []
    values = [0, 1, -1, 127, 128, -33, -129, 40_000, -40_000, 2**40, 2.5, -(2**62)]
    assert box.call(values) == [v * 2 + 1 for v in values]
    assert open_sandbox(AS_WASM, "double", Limits()).call(list(range(2000))) == [
        2 * x for x in range(2000)
    ]
    odd = open_sandbox(AS_WASM, "is_odd", Limits())
    assert odd.call([1, 2, 3, 1.0, -5]) == [True, False, True, False, True]


def test_the_assemblyscript_build_fails_a_call_on_a_non_number():
    box = open_sandbox(AS_WASM, "double", Limits())
    with pytest.raises(SandboxError, match="double failed: items must be numbers"):
        box.call([1, "two"])
    assert box.call([3]) == [6]


async def test_the_example_workflow_runs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)  # its module paths are relative to the root
    result = await FlowRuntime().arun(read_workflow("examples/wasm/wasm_map.yaml"))
    assert result.ok, result.error
    assert result.output("result") == [3, 5, 7, 11]
    [dead] = result.dead_letters
    assert dead.item == "four"
    assert "items must be numbers" in dead.reason
