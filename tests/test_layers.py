"""Imports flow one way: core <- runtime <- nodes/connectors <- cli/server.

Every module's imports are read with ``ast`` (relative ones resolved, imports
under ``TYPE_CHECKING`` and inside functions included), so a back-edge fails
here before it becomes an import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flowstream"

# Layer -> module prefixes it must never import. Routed flows sit beside the
# nodes: they build on core and runtime, and neither of those knows them.
FORBIDDEN = {
    "flowstream.core": (
        "flowstream.runtime",
        "flowstream.nodes",
        "flowstream.routed",
        "flowstream.cli",
        "flowstream.server",
        "connectors",
    ),
    "flowstream.runtime": (
        "flowstream.nodes",
        "flowstream.routed",
        "flowstream.cli",
        "flowstream.clirun",
        "flowstream.server",
    ),
    "flowstream.routed": (
        "flowstream.nodes",
        "flowstream.cli",
        "flowstream.server",
        "connectors",
    ),
    "flowstream.nodes": ("flowstream.cli", "flowstream.clirun", "flowstream.server"),
    # The fluent API builds workflows over core and runtime; it names node
    # types by id, so it needs neither the node library nor the interfaces.
    "flowstream.dataflow": (
        "flowstream.nodes",
        "flowstream.cli",
        "flowstream.clirun",
        "flowstream.server",
        "connectors",
    ),
    # The server is an interface beside the CLI: it builds on core, runtime,
    # nodes and routed, and reaches connectors only through the registry.
    "flowstream.server": ("flowstream.cli", "connectors"),
}

# The one allowed back-edge: the built-ins are imported lazily, inside
# NodeRegistry.default, so importing the runtime never imports the nodes.
ALLOWED = {("flowstream.runtime.registry", "NodeRegistry.default", "flowstream.nodes")}


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
            hit = next((f for f in forbidden if is_under(imp.target, f)), None)
            if hit is not None and (imp.module, imp.scope, hit) not in ALLOWED:
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


def test_the_one_allowed_back_edge_is_lazy_and_still_there() -> None:
    # If the exception stops being used, it should be removed from ALLOWED;
    # if the import moves to module level, test_no_import_back_edges fails.
    used = [
        i
        for i in all_imports()
        if i.module == "flowstream.runtime.registry"
        and is_under(i.target, "flowstream.nodes")
    ]
    assert [(i.scope, i.target) for i in used] == [
        ("NodeRegistry.default", "flowstream.nodes"),
        ("NodeRegistry.default", "flowstream.nodes.BUILTIN_NODES"),
    ]


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
            # The allowance is for NodeRegistry.default only, not module level.
            "flowstream.runtime.registry",
            "from ..nodes import BUILTIN_NODES",
            "flowstream.nodes",
        ),
        (
            "flowstream.runtime.registry",
            "class NodeRegistry:\n"
            "    def other(self):\n"
            "        import flowstream.nodes\n",
            "flowstream.nodes",
        ),
    ],
)
def test_checker_catches_back_edges(module: str, source: str, target: str) -> None:
    bad = back_edges(imports_of(source, module))
    assert bad
    assert bad[0].target == target


def test_checker_allows_forward_edges_and_the_lazy_registry_import() -> None:
    source = (
        "from ..core.node import NodeSpec\n"
        "from ..errors import UnknownNodeType\n"
        "import msgspec\n"
        "class NodeRegistry:\n"
        "    @classmethod\n"
        "    def default(cls):\n"
        "        from ..nodes import BUILTIN_NODES\n"
    )
    assert back_edges(imports_of(source, "flowstream.runtime.registry")) == []
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
