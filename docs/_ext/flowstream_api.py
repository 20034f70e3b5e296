"""A Sphinx extension: the API reference of everything in ``flowstream.__all__``.

The ``flowstream-api`` directive expands, at build time, into one autodoc
directive per public name, so a name added to ``__all__`` is documented (and
its docstring checked) without editing the page. Public submodules listed in
``PUBLIC_MODULES`` follow, each documented whole.

References written against a private path (``flowstream.core.workflow.Workflow``,
as type hints show them) are resolved to the public name they are exported
under (``flowstream.Workflow``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.parsing import nested_parse_to_nodes

if TYPE_CHECKING:
    from docutils import nodes
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

PUBLIC_MODULES = ("flowstream.errors", "flowstream.testing", "flowstream.dataflow")

# Types that public signatures mention but that are not exported themselves:
# documented at their own path so that every reference resolves. A name
# here is a candidate for ``__all__``.
SUPPORTING = (
    "flowstream.core.expr.ExprError",
    "flowstream.core.markers.Marker",
    "flowstream.core.sandbox.Grant",
    "flowstream.core.policies.Checkpoint",
    "flowstream.core.workflow.Mode",
    "flowstream.dataflow.base.StreamBase",
    "flowstream.routed.action.ActionKind",
    "flowstream.routed.action.Condition",
    "flowstream.routed.flow.FlowBuilder",
    "flowstream.routed.flow.FlowNode",
    "flowstream.routed.flow.Step",
    "flowstream.routed.storage.FileFormat",
    "flowstream.runtime.backends.UnknownBackend",
    "flowstream.runtime.events.EventBusStatistics",
    "flowstream.runtime.options.Sleep",
    "flowstream.runtime.protocol.ExecutorObserver",
    "flowstream.runtime.parallel.Edge",
    "flowstream.runtime.parallel.Expansion",
    "flowstream.runtime.graph.GraphNode",
)

# Bases below which a class's methods come from mixins, one module per family
# of methods (`DataStream`'s joins, folds and windows): the class lists the
# mixins' methods as its own, and nothing from the base itself or above.
MIXIN_ROOTS = ("StreamBase",)


def _public_classes() -> set[type]:
    """The classes that the reference documents by name."""
    found: set[type] = set()
    for module in ("flowstream", *PUBLIC_MODULES):
        mod = importlib.import_module(module)
        found |= {v for n in mod.__all__ if inspect.isclass(v := getattr(mod, n))}
    return found


def _mixins_up_to(cls: type) -> str | None:
    """The base up to which ``cls``'s inherited methods are its own, if any.

    Mixin methods count as the class's own; a documented base's do not (a
    subclass of `DataStream` lists only what it adds or overrides).
    """
    public = _public_classes()
    for depth, base in enumerate(cls.__mro__[1:]):
        if base.__name__ in MIXIN_ROOTS or base in public:
            return base.__name__ if depth else None
    return None


def _lookup(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    return "data"


def _listed_attributes(cls: type) -> list[str]:
    """Attributes that a class's ``Attributes:`` section documents.

    napoleon lists them (with type and text) under the class; autodoc would
    document each a second time as a bare member, so they are excluded.
    """
    section = _attributes_section(inspect.getdoc(cls) or "")
    names = re.findall(r"^\s+(\w+)\b[^\n]*:", section, re.MULTILINE)
    return [n for n in names if hasattr(cls, n)]


def _entry(kind: str, path: str) -> list[str]:
    if kind == "data":
        # An alias's value (``Annotated[str, Marker(...), Meta(...)]``) is
        # noise in a reference; its docstring says what it is.
        return [f".. autodata:: {path}", "   :no-value:", ""]
    lines = [f".. auto{kind}:: {path}"]
    if kind == "class":
        cls = _lookup(path)
        listed = _listed_attributes(cls)
        if listed:
            lines.append(f"   :exclude-members: {', '.join(listed)}")
        root = _mixins_up_to(cls)
        if root is not None:
            lines.append(f"   :inherited-members: {root}")
    return [*lines, ""]


class FlowstreamApi(SphinxDirective):
    """Document every name in ``flowstream.__all__``, grouped by kind."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        """Expand into autodoc directives and parse them in place."""
        package = importlib.import_module("flowstream")
        lines: list[str] = [".. module:: flowstream", "   :no-index:", ""]
        groups: dict[str, list[str]] = {"class": [], "function": [], "data": []}
        for name in package.__all__:
            groups[_kind(getattr(package, name))].append(name)
        titles = {"class": "Classes", "function": "Functions", "data": "Constants"}
        for kind in ("class", "function", "data"):
            if not groups[kind]:
                continue
            title = titles[kind]
            lines += [title, "-" * len(title), ""]
            for name in groups[kind]:
                lines += _entry(kind, f"flowstream.{name}")
        title = "Supporting types"
        lines += [title, "-" * len(title), ""]
        lines += [
            "Types that the signatures above use, documented where they are"
            " defined (they are not exported and may change).",
            "",
        ]
        for path in SUPPORTING:
            lines += _entry(_kind(_lookup(path)), path)
        for module in PUBLIC_MODULES:
            title = f"``{module}``"
            lines += [title, "-" * len(title), "", f".. automodule:: {module}"]
            # automodule cannot list a class's mixin methods: such a class
            # gets its own entry after the module's other members.
            mod = importlib.import_module(module)
            mixed = [
                n
                for n in mod.__all__
                if inspect.isclass(obj := getattr(mod, n))
                and _mixins_up_to(obj) is not None
            ]
            if mixed:
                lines.append(f"   :exclude-members: {', '.join(mixed)}")
            lines.append("")
            for name in mixed:
                lines += _entry("class", f"{module}.{name}")
        content = StringList(lines, source="flowstream-api")
        return list(
            nested_parse_to_nodes(self.state, content, allow_section_headings=True)
        )


def _resolve_private(
    app: Sphinx, env: BuildEnvironment, node: Any, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve a private or bare name to the flowstream object documented for it.

    Type hints spell a type by its defining module
    (``flowstream.core.workflow.Workflow``) or bare (``GraphNode``); the
    reference documents it as ``flowstream.Workflow`` or at its own path.
    A name that matches no documented object, or several, stays unresolved
    (and fails the build in nitpicky mode).
    """
    if node.get("refdomain") != "py":
        return None
    # Sphinx 9 quotes an alias inside a generic: ``tuple['flowstream.FilePath', ...]``.
    target = node.get("reftarget", "").strip("'")
    if "." in target and not target.startswith("flowstream."):
        return None
    name = target.rsplit(".", 1)[-1]
    domain = env.get_domain("py")
    documented = [
        full
        for full, _, _, _, _, _ in domain.get_objects()
        if full.startswith("flowstream.") and full.rsplit(".", 1)[-1] == name
    ]
    public = f"flowstream.{name}"
    if public in documented:
        match = public
    elif len(documented) == 1:
        match = documented[0]
    else:
        return None
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], match, node, contnode
    )


def _attributes_section(doc: str) -> str:
    """Return the text of a Google docstring's ``Attributes:`` section."""
    match = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|[ \t]*\n)*)", doc, re.MULTILINE)
    return match.group(1) if match else ""


# The guides in reading order; any other page in docs/guide/ follows, sorted.
GUIDE_ORDER = (
    "getting-started",
    "writing-nodes",
    "python-api",
    "state",
    "windows",
    "checkpoints",
    "testing",
    "cel",
    "brokers",
    "server",
    "deploying",
)


def _list_guides(app: Sphinx, docname: str, source: list[str]) -> None:
    """Replace ``@flowstream-guides@`` in the index with every guide, in order.

    Every file in docs/guide/ is listed (so a guide added there is on the
    site), those named in `GUIDE_ORDER` first.
    """
    if docname != "index":
        return
    found = sorted(p.stem for p in (Path(app.srcdir) / "guide").glob("*.md"))
    ordered = [g for g in GUIDE_ORDER if g in found]
    ordered += [g for g in found if g not in GUIDE_ORDER]
    lines = "\n".join(f"guide/{g}" for g in ordered)
    source[0] = source[0].replace("@flowstream-guides@", lines)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive, the private-path resolver and the guide list."""
    app.add_directive("flowstream-api", FlowstreamApi)
    app.connect("missing-reference", _resolve_private)
    app.connect("source-read", _list_guides)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
