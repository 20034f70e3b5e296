"""``nodes``: the node types, as text, JSON or the docs/nodes.md page."""

from __future__ import annotations

import re
import textwrap
import types
import typing
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..core.node import NodeSpec

from ._base import EXIT_INVALID, _fail, cli


def _describe(spec: NodeSpec) -> dict[str, Any]:
    import msgspec

    fields: list[dict[str, Any]] = []
    if spec.config_type is not None:
        for f in msgspec.structs.fields(spec.config_type):
            entry: dict[str, Any] = {"name": f.encode_name, "type": _type_name(f.type)}
            if f.required:
                entry["required"] = True
            elif f.default not in (msgspec.NODEFAULT, msgspec.UNSET):
                entry["default"] = f.default
            fields.append(entry)
    return {
        "type": spec.type_id,
        "description": spec.description,
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "ports_from_config": spec.ports is not None,
        "config": fields,
        "needs_end_of_input": spec.needs_end,
        "details": _details(spec),
        "example": _example(spec),
    }


# Google sections about the Python function, not the node a workflow uses
# (its config is listed from the config type): left out of the docs.
_PYTHON_SECTIONS = ("Args:", "Returns:", "Yields:", "Raises:")
_EXAMPLE_SECTIONS = ("Example:", "Examples:")


def _sections(spec: NodeSpec) -> tuple[list[str], dict[str, list[str]]]:
    """The docstring's body lines (before any section) and its sections."""
    import inspect

    lines = (inspect.getdoc(spec.fn) or "").splitlines()
    body: list[str] = []
    sections: dict[str, list[str]] = {}
    current = body
    for line in lines:
        if (
            line
            and not line[0].isspace()
            and line.strip()
            in (
                *_PYTHON_SECTIONS,
                *_EXAMPLE_SECTIONS,
            )
        ):
            current = sections.setdefault(line.strip(), [])
            continue
        if current is not body and line.strip() and not line[0].isspace():
            current = body  # a paragraph after a section, back at the margin
        current.append(line)
    return body, sections


def _details(spec: NodeSpec) -> str:
    """The docstring after its summary line, without its sections."""
    body, _ = _sections(spec)
    text = "\n".join(body).strip()
    summary, _, rest = text.partition("\n\n")
    # The summary is the description (unless the decorator gave another).
    return rest.strip() if summary.strip() == spec.description else text


def _example(spec: NodeSpec) -> str:
    """The ``Example:`` section of a node type's docstring, dedented."""
    _, sections = _sections(spec)
    for name in _EXAMPLE_SECTIONS:
        if name in sections:
            return textwrap.dedent("\n".join(sections[name])).strip()
    return ""


def _type_name(tp: Any) -> str:
    """A stable, readable name for a config field's type (for docs)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        kinds = [getattr(m, "kind", None) for m in tp.__metadata__]
        if "cel" in kinds:
            return "cel"
        if "fn" in kinds:
            return "module:attr"
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        # UnsetType only says the field may be left out: not a type to show.
        shown = (a for a in args if getattr(a, "__name__", "") != "UnsetType")
        return " | ".join(_type_name(a) for a in shown)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if tp is type(None):
        return "null"
    if tp is typing.Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


@cli.command("nodes", short_help="List the node types, or show one in full.")
@click.argument("type_id", metavar="[TYPE]", required=False)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document, for machines."
)
@click.option("--markdown", is_flag=True, help="The reference page (docs/nodes.md).")
def nodes_command(type_id: str | None, as_json: bool, markdown: bool) -> None:
    """List the node types with their ports and config fields.

    Given a TYPE (such as transform.map), show that one type in full: its
    description, ports, config fields and example.
    """
    import msgspec

    from ..engine import default_registry

    registry = default_registry()
    if type_id is not None:
        if type_id not in registry:
            near = registry.suggest(type_id)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            _fail(f"unknown node type {type_id!r}{hint}", EXIT_INVALID)
        one = _describe(registry.get(type_id))
        if as_json:
            click.echo(msgspec.json.format(msgspec.json.encode(one), indent=2))
        else:
            _show_one(one)
        return
    specs = [_describe(s) for s in registry]
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(specs), indent=2))
        return
    if markdown:
        click.echo(_markdown(specs), nl=False)
        return
    for s in specs:
        ins = ", ".join(s["inputs"]) or "-"
        outs = ", ".join(s["outputs"])
        click.echo(f"{s['type']:<22} in: {ins:<12} out: {outs}")
        if s["description"]:
            click.echo(f"  {rst_literals(s['description'], markdown=False)}")
        for f in s["config"]:
            click.echo(f"    {_field_line(f)}")


_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)
_LITERAL_BLOCK = re.compile(r"(\S)?\s*::$", re.MULTILINE)
_NAME = re.compile(r"`([^`\n]+)`")


def rst_literals(text: str, *, markdown: bool) -> str:
    """Docstrings' RST ``literals``: Markdown code spans, or plain text."""
    return _LITERAL.sub(r"`\1`" if markdown else r"\1", text)


def rst_text(text: str, *, markdown: bool) -> str:
    """A docstring's RST prose as Markdown (or plain text).

    Inline ``literals`` become code spans (or plain text); a paragraph
    ending in ``::`` ends in ``:`` and the indented block after it stays
    indented, which is a code block in Markdown too. Lists (``*``, ``-``)
    and paragraphs read the same in both.
    """
    blocks = _LITERAL_BLOCK.sub(lambda m: f"{m.group(1) or ''}:", text)
    shown = rst_literals(blocks, markdown=markdown)
    # Plain text: `interpreted text` (a name) loses its quotes too.
    return shown if markdown else _NAME.sub(r"\1", shown)


def _show_one(s: dict[str, Any]) -> None:
    """One node type in full: description, ports, config and example."""
    click.echo(s["type"])
    if s["description"]:
        click.echo(f"  {rst_literals(s['description'], markdown=False)}")
    if s["details"]:
        click.echo("")
        for line in rst_text(s["details"], markdown=False).splitlines():
            click.echo(f"  {line}".rstrip())
        click.echo("")
    named = " (plus ports named in the config)" if s["ports_from_config"] else ""
    click.echo(f"  inputs:  {', '.join(s['inputs']) or 'none'}{named}")
    click.echo(f"  outputs: {', '.join(s['outputs'])}{named}")
    if s["needs_end_of_input"]:
        click.echo("  emits only at end of input (not after an unbounded source)")
    if s["config"]:
        click.echo("  config:")
        for f in s["config"]:
            click.echo(f"    {_field_line(f)}")
    if s["example"]:
        click.echo("  example:")
        for line in rst_text(s["example"], markdown=False).splitlines():
            click.echo(f"    {line}".rstrip())


def _field_line(f: dict[str, Any]) -> str:
    if f.get("required"):
        tail = " (required)"
    elif "default" in f:
        tail = f" = {f['default']!r}"
    else:
        tail = ""
    return f"{f['name']}: {f['type']}{tail}"


_NODE_FIELDS = [
    "Besides `id`, `type` and `config`, every node of a workflow may declare:",
    "",
    "- `retry: {max_attempts, delay_ms, backoff_multiplier}`: retry a failing",
    "  item (a call, a kernel's item, a generator restarted on it);",
    "- `error_handling: {mode: stop_workflow | continue_on_error}`: after the",
    "  retries, fail the run or send the item to `error` with the reason",
    "  (`retry_workflow` belongs to the workflow, not a node);",
    "- `fuse: false`: keep the node out of fused chains (its own task);",
    "- `concurrency: N` and `ordered: true | false` (one-shot async nodes fed",
    "  by a stream, such as `http.request`, `transform.map_async` or your own",
    "  `async def f(x)`): up to N calls in flight at once; results in input",
    "  order, or as they finish with `ordered: false`; retries and dead letters",
    "  per item; more input is read only while fewer than N are in flight",
    "  (backpressure); under stream checkpoints a barrier waits for the calls",
    "  started before it;",
    "- `timeout_ms`: one-shot nodes: a call over it fails the item",
    "  (docs/sandbox.md says what can be enforced in-process);",
    "- `parallelism: N`: run N instances (keyed nodes split their keys,",
    "  stateless ones share the items, `file.source` reads N parts of its",
    "  file; the workflow's `parallelism` is the default for all but sources;",
    "  `flowstream plan` shows each edge; docs/scale-out.md).",
    "",
]


def _markdown(specs: Sequence[dict[str, Any]]) -> str:
    lines = [
        "# Node types",
        "",
        "Generated by `flowstream nodes --markdown`; do not edit by hand.",
        "",
        *_NODE_FIELDS,
    ]
    for s in specs:
        description = rst_literals(s["description"] or "", markdown=True)
        lines += [f"## `{s['type']}`", "", description, ""]
        if s["details"]:
            lines += [rst_text(s["details"], markdown=True), ""]
        named = " (plus ports named in the config)" if s["ports_from_config"] else ""
        inputs = ", ".join(f"`{p}`" for p in s["inputs"]) or "none"
        lines.append(f"- inputs: {inputs}{named if not s['inputs'] else ''}")
        lines.append(f"- outputs: {', '.join(f'`{p}`' for p in s['outputs'])}{named}")
        if s["needs_end_of_input"]:
            lines.append("- emits only at end of input (not after an unbounded source)")
        if s["config"]:
            lines.append("- config:")
            lines += [f"  - `{_field_line(f)}`" for f in s["config"]]
        if s["example"] and ("``" in s["example"] or "::" in s["example"]):
            # Prose (inline literals, a literal block): rendered as Markdown.
            lines += ["", "Example:", "", rst_text(s["example"], markdown=True)]
        elif s["example"]:
            lines += [
                "",
                "Example:",
                "",
                *(f"    {t}" for t in s["example"].splitlines()),
            ]
        lines.append("")
    return "\n".join(lines)
