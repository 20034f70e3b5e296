"""Imports flow one way: core <- runtime <- nodes/connectors <- engine <- cli/server.

Every module's imports are read with ``ast`` (relative ones resolved, imports
under ``TYPE_CHECKING`` and inside functions included), so a back-edge fails
here before it becomes an import cycle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowstream"

# Layer -> module prefixes it must never import. From the bottom up:
#
#   core <- runtime <- nodes, connectors <- engine <- routed, dataflow, testing
#        <- cli, clirun, server
#
# `flowstream.engine` is the composition root: the one place that joins the
# runtime to the node library (`default_registry`, `FlowRuntime`). The
# runtime takes a registry wherever it needs one and never learns which node
# types exist. Routed flows, the fluent dataflow API and the test helpers sit
# above the root: each offers its users a default registry or a FlowRuntime,
# and none of them imports another (they name node types by id). Nothing
# below the root may import it, nor anything that sits above it.
_ABOVE_ROOT = ("flowstream.routed", "flowstream.dataflow", "flowstream.testing")
_INTERFACES = ("flowstream.cli", "flowstream.clirun", "flowstream.server")
FORBIDDEN = {
    "flowstream.core": (
        "flowstream.runtime",
        "flowstream.nodes",
        "connectors",
        "flowstream.engine",
        *_ABOVE_ROOT,
        *_INTERFACES,
    ),
    "flowstream.runtime": (
        "flowstream.nodes",
        "connectors",
        "flowstream.engine",
        *_ABOVE_ROOT,
        *_INTERFACES,
    ),
    "flowstream.nodes": ("connectors", "flowstream.engine", *_ABOVE_ROOT, *_INTERFACES),
    # The root loads connectors through their entry points, never by import
    # (a family whose client library is missing disables only itself).
    "flowstream.engine": ("connectors", *_ABOVE_ROOT, *_INTERFACES),
    "flowstream.routed": (
        "flowstream.nodes",
        "connectors",
        "flowstream.dataflow",
        "flowstream.testing",
        *_INTERFACES,
    ),
    "flowstream.dataflow": (
        "flowstream.nodes",
        "connectors",
        "flowstream.routed",
        "flowstream.testing",
        *_INTERFACES,
    ),
    "flowstream.testing": ("flowstream.routed", "flowstream.dataflow", *_INTERFACES),
    # The server is an interface beside the CLI: it builds on everything
    # below, and reaches connectors only through the registry.
    "flowstream.server": ("flowstream.cli", "flowstream.clirun", "connectors"),
}


class Import(NamedTuple):
    module: str  # the importing module
    scope: str  # dotted class/function path the import sits in ("" at top level)
    target: str  # the absolute module imported (or a name inside it)
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in ``source``, as absolute module names with their scope."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(
                        Import(module, ".".join(scope), alias.name, child.lineno)
                    )
            elif isinstance(child, ast.ImportFrom):
                base = resolve(child, package)
                # "from . import x" may import a submodule: record both forms.
                targets = [base] if child.module else []
                targets += [f"{base}.{alias.name}" for alias in child.names]
                for target in targets:
                    found.append(Import(module, ".".join(scope), target, child.lineno))
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(child, [*scope, child.name])
            else:
                visit(child, scope)

    visit(ast.parse(source), [])
    return found


def resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    if node.level - 1 > len(parts) - 1:
        msg = f"relative import beyond the top of {package!r}"
        raise ValueError(msg)
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def back_edges(imports: list[Import]) -> list[Import]:
    bad = []
    for imp in imports:
        for layer, forbidden in FORBIDDEN.items():
            if not is_under(imp.module, layer):
                continue
            if any(is_under(imp.target, f) for f in forbidden):
                bad.append(imp)
    return bad


def all_imports() -> list[Import]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += imports_of(
            path.read_text(), module_name(path), path.name == "__init__.py"
        )
    return found


def test_no_import_back_edges() -> None:
    bad = back_edges(all_imports())
    assert not bad, "\n".join(
        f"{i.module}:{i.line} ({i.scope or 'module level'}) imports {i.target}"
        for i in bad
    )


def test_importing_the_runtime_imports_no_node_type() -> None:
    # The static check above, seen from a fresh interpreter: every runtime
    # module imported, and still no node library, connector or root loaded.
    runtime = PACKAGE / "runtime"
    modules = [module_name(p) for p in sorted(runtime.rglob("*.py"))]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.startswith("
        "('flowstream.nodes', 'flowstream.engine', 'connectors'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "flowstream.runtime.ray.actor" in modules


def test_the_default_registry_lives_in_the_root() -> None:
    from flowstream import NodeRegistry, default_registry
    from flowstream.nodes import BUILTIN_NODES

    with pytest.raises(AttributeError, match="moved"):  # the runtime builds none
        NodeRegistry.default()
    assert len(NodeRegistry()) == 0
    builtins = default_registry(entry_points=False)
    assert [s.type_id for s in builtins] == sorted(s.type_id for s in BUILTIN_NODES)


def test_only_the_cli_imports_the_server_and_only_lazily() -> None:
    # Nothing below the interfaces may know the server, and the command line
    # imports it inside the commands that need it (the web framework is an
    # extra, and `flowstream run` should not pay for importing it).
    users = [
        i
        for i in all_imports()
        if is_under(i.target, "flowstream.server")
        and not is_under(i.module, "flowstream.server")
    ]
    assert users
    assert all(is_under(i.module, "flowstream.cli") for i in users), users
    assert all(i.scope for i in users), [i for i in users if not i.scope]


LOCAL = "flowstream.runtime.local"
# Who may name the local executor's package (never its modules): the backend
# factory that makes executors, and the public API's re-export.
# flowstream re-exports WorkflowExecutor (its names live in flowstream._api).
LOCAL_USERS = {"flowstream.runtime.backends", "flowstream", "flowstream._api"}


def local_executor_leaks(imports: list[Import]) -> list[Import]:
    """Imports of the local executor's internals from outside it."""
    return [
        i
        for i in imports
        if is_under(i.target, LOCAL)
        and not is_under(i.module, LOCAL)
        and (i.target != LOCAL or i.module not in LOCAL_USERS)
        and not (i.target == f"{LOCAL}.WorkflowExecutor" and i.module in LOCAL_USERS)
    ]


def test_the_local_executor_is_reached_only_through_the_protocol() -> None:
    # Interfaces use runtime.protocol.Executor and runtime.backends; the local
    # executor's modules (segments, stages, the DAG loop) are its own.
    bad = local_executor_leaks(all_imports())
    assert not bad, "\n".join(f"{i.module}:{i.line} imports {i.target}" for i in bad)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("flowstream.server.runs", "from ..runtime.local import WorkflowExecutor"),
        ("flowstream.cli", "from .runtime.local.fusion import NodeRun"),
        ("flowstream.runtime.backends", "from .local.dag import ScheduleRun"),
    ],
)
def test_the_local_executor_check_can_fail(module: str, source: str) -> None:
    assert local_executor_leaks(imports_of(source, module))


def test_every_layer_exists() -> None:
    assert (PACKAGE / "core").is_dir()
    assert (PACKAGE / "runtime").is_dir()
    assert (PACKAGE / "routed").is_dir()
    assert any(PACKAGE.joinpath("core").glob("*.py"))


# --- the checker itself can fail ----------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "target"),
    [
        (
            "flowstream.core.codec",
            "from ..runtime import channel",
            "flowstream.runtime",
        ),
        ("flowstream.core.codec", "from .. import runtime", "flowstream.runtime"),
        ("flowstream.core.codec", "import flowstream.cli", "flowstream.cli"),
        ("flowstream.core.codec", "import connectors.http", "connectors.http"),
        (
            "flowstream.core.codec",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from ..nodes import source\n",
            "flowstream.nodes",
        ),
        (
            "flowstream.runtime.options",
            "from ..nodes import BUILTIN_NODES",
            "flowstream.nodes",
        ),
        (
            "flowstream.runtime.options",
            "def f():\n    from ..cli import main\n",
            "flowstream.cli",
        ),
        (
            "flowstream.runtime.options",
            "from ..routed import Flow",
            "flowstream.routed",
        ),
        ("flowstream.core.workflow", "import flowstream.routed", "flowstream.routed"),
        (
            "flowstream.routed.flow",
            "from ..nodes import BUILTIN_NODES",
            "flowstream.nodes",
        ),
        ("flowstream.routed.flow", "from ..cli import main", "flowstream.cli"),
        ("flowstream.nodes.sink", "from ..server import app", "flowstream.server"),
        ("flowstream.server.app", "from ..cli import main", "flowstream.cli"),
        ("flowstream.server.routes", "import connectors.http", "connectors.http"),
        (
            # No exception for the registry any more: not even lazily.
            "flowstream.runtime.registry",
            "class NodeRegistry:\n"
            "    @classmethod\n"
            "    def default(cls):\n"
            "        from ..nodes import BUILTIN_NODES\n",
            "flowstream.nodes",
        ),
        (
            "flowstream.runtime.ray.actor",
            "def prepare(self):\n    from ...engine import default_registry\n",
            "flowstream.engine",
        ),
        ("flowstream.runtime.blocking", "import connectors.files", "connectors.files"),
        (
            "flowstream.nodes.sink",
            "from ..engine import FlowRuntime",
            "flowstream.engine",
        ),
        ("flowstream.core.node", "from ..engine import x", "flowstream.engine"),
        ("flowstream.engine", "from .routed import Flow", "flowstream.routed"),
        ("flowstream.engine", "from .cli import main", "flowstream.cli"),
        ("flowstream.engine", "import connectors.files", "connectors.files"),
        ("flowstream.routed.steps", "from ..testing import x", "flowstream.testing"),
        ("flowstream.dataflow.flow", "from ..routed import Flow", "flowstream.routed"),
        ("flowstream.testing", "from .clirun import CliRun", "flowstream.clirun"),
    ],
)
def test_checker_catches_back_edges(module: str, source: str, target: str) -> None:
    bad = back_edges(imports_of(source, module))
    assert bad
    assert bad[0].target == target


def test_checker_allows_forward_edges() -> None:
    source = (
        "from ..core.node import NodeSpec\n"
        "from ..errors import UnknownNodeType\n"
        "import msgspec\n"
    )
    assert back_edges(imports_of(source, "flowstream.runtime.registry")) == []
    root = (
        "from .nodes import BUILTIN_NODES\nfrom .runtime.registry import NodeRegistry\n"
    )
    assert back_edges(imports_of(root, "flowstream.engine")) == []
    above = "from ..engine import FlowRuntime, default_registry\n"
    for module in ("flowstream.routed.steps", "flowstream.dataflow.flow"):
        assert back_edges(imports_of(above, module)) == []
    testing = "from .engine import FlowRuntime, default_registry\n"
    assert back_edges(imports_of(testing, "flowstream.testing")) == []
    assert back_edges(imports_of("from ..runtime import x", "flowstream.nodes.y")) == []
    routed = (
        "from ..core.workflow import Route\nfrom ..runtime.events import EventBus\n"
    )
    assert back_edges(imports_of(routed, "flowstream.routed.flow")) == []


def test_relative_imports_resolve() -> None:
    targets = [i.target for i in imports_of("from ...errors import X", "a.b.c.d")]
    assert targets == ["a.errors", "a.errors.X"]
    package = imports_of("from .codec import encode", "a.core", is_package=True)
    assert [i.target for i in package] == ["a.core.codec", "a.core.codec.encode"]
    bare = imports_of("from . import codec, node", "a.core.values")
    assert [i.target for i in bare] == ["a.core.codec", "a.core.node"]
    with pytest.raises(ValueError, match="beyond the top"):
        imports_of("from .... import x", "flowstream.core.codec")


CONNECTORS = ROOT / "connectors"
# connectors/ uses only flowstream's public API, so it could become its own
# distribution: the package root and the public submodules.
PUBLIC = ("flowstream", "flowstream.errors", "flowstream.testing")


def test_connectors_use_only_the_public_api() -> None:
    bad = []
    for path in sorted(CONNECTORS.rglob("*.py")):
        module = module_name(path)
        for imp in imports_of(path.read_text(), module, path.name == "__init__.py"):
            target = imp.target
            if not is_under(target, "flowstream"):
                continue
            # "from flowstream import X" resolves to flowstream.X: allow names
            # of the package root, refuse its private submodules.
            if target in PUBLIC or any(is_under(target, p) for p in PUBLIC[1:]):
                continue
            root_name = target.removeprefix("flowstream.")
            if (
                "." not in root_name
                and not (PACKAGE / root_name).exists()
                and not (PACKAGE / f"{root_name}.py").exists()
            ):
                continue  # a name exported by flowstream/__init__.py
            bad.append(f"{module}:{imp.line} imports {target}")
    assert not bad, "\n".join(bad)
