"""Sphinx configuration of the flowstream documentation site (`make docs`).

Every page is Markdown (MyST); the API reference is generated from the
docstrings of everything in `flowstream.__all__` by the local extension
`_ext/flowstream_api.py`. The build runs with ``-W --keep-going -n``: a warning
or a reference that does not resolve fails it.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import flowstream  # noqa: E402

project = "flowstream"
author = "the flowstream authors"
copyright = "2026, the flowstream authors"
release = flowstream.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "flowstream_api",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", ".venv", "README.md"]
html_theme = "furo"
html_title = f"flowstream {release}"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

nitpicky = True
napoleon_use_ivar = True

# Without network access there is no intersphinx: references into other
# projects' docs (the standard library, msgspec, ...) cannot resolve and are
# not checked. Every reference into flowstream itself must resolve.
_EXTERNAL = (
    "collections",
    "typing",
    "typing_extensions",
    "asyncio",
    "logging",
    "os",
    "pathlib",
    "datetime",
    "enum",
    "types",
    "contextlib",
    "concurrent",
    "selectors",
    "msgspec",
    "cel",
    "sqlite3",
    "httpx",
    "click",
    "wasmtime",
    "litestar",
)
nitpick_ignore_regex = [
    ("py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    # Bare standard-library names as annotations spell them.
    (
        "py:.*",
        r"(Any|Callable|Awaitable|Coroutine|AsyncIterator|AsyncIterable|Iterator|"
        r"Iterable|Mapping|MutableMapping|Sequence|Path|Enum|Self|Literal|"
        r"Annotated|TypeAlias|ClassVar|Final|Protocol|Generic|"
        r"PathLike|Logger|Event|Task|TracebackType|datetime|timedelta)",
    ),
    # How Sphinx 9 wraps an alias inside a generic (``tuple[FilePath, ...]``).
    ("py:class", r"TypeAliasForwardRef"),
    # Type variables.
    ("py:class", r"(flowstream\..*\.)?(T|T_co|T_contra|S|K|V|R|P|D|U|ItemT)"),
    # The Ray backend's hooks on the local executor (`checkpoint_under`,
    # `record_under`) name runtime-internal types that the API reference
    # does not document.
    ("py:class", r"DelegatedCoordinator|CompletionRecorder"),
]
# A builtin spelled bare (``type[T]``) also matches flowstream attributes of
# that name (``WorkflowNode.type``); such ambiguous references resolve to one
# of them, and their warning is not a broken reference.
suppress_warnings = ["ref.python"]

# Aliases keep their public name in signatures instead of being expanded
# (``Annotated[str, Marker('path'), Meta(...)]``).
autodoc_type_aliases = {
    name: f"flowstream.{name}"
    for name in ("Expr", "FnRef", "FilePath", "ListenHost", "OutboundUrl", "Value")
}
