"""The ``flowstream`` command line: validate, run and list node types.

One handler (`main`) maps flowstream's errors to messages and exit codes:
0 success, 1 a failed run, 2 invalid input. It never prints a traceback for an
error the user caused.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import msgspec

from . import __version__
from .core.workflow import Workflow, read_workflow
from .errors import CodecError, FlowstreamError, WorkflowValidationError
from .runtime.registry import NodeRegistry
from .runtime.validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from .core.node import NodeSpec

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageProblem(FlowstreamError):
    """Invalid input named on the command line (exit 2)."""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors the user caused into messages and exit codes."""
    try:
        yield
    except WorkflowValidationError as exc:
        head = f"{exc.source}: " if exc.source else ""
        count = len(exc.problems)
        click.echo(
            f"{head}invalid workflow, {count} problem{'s' * (count != 1)}:", err=True
        )
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(EXIT_INVALID)
    except (CodecError, UsageProblem) as exc:
        _fail(str(exc), EXIT_INVALID)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        _fail(f"{name}: {exc.strerror or exc}", EXIT_INVALID)


def load_graph(path: str, registry: NodeRegistry) -> Graph:
    """Read and validate a workflow file (raising the user-facing errors)."""
    workflow: Workflow = read_workflow(path)
    return validate(workflow, registry, source=path)


def _add_cwd_to_path() -> None:
    # Workflows name user nodes and callables as "module:attr" relative to the
    # directory the command runs in, as `python -m` would.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="flowstream")
def cli() -> None:
    """flowstream: streaming dataflow and DAG runs from one graph."""
    _add_cwd_to_path()


@cli.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate_command(file: str) -> None:
    """Check a workflow file and name every problem in it."""
    with _user_errors():
        graph = load_graph(file, NodeRegistry.default())
    wf = graph.workflow
    click.echo(
        f"ok: {file}: workflow {wf.name!r} ({wf.mode} mode), "
        f"{len(wf.nodes)} nodes, {len(wf.connections)} connections"
    )


def _describe(spec: NodeSpec) -> dict[str, Any]:
    fields: list[dict[str, Any]] = []
    if spec.config_type is not None:
        for f in msgspec.structs.fields(spec.config_type):
            entry: dict[str, Any] = {"name": f.encode_name, "type": _type_name(f.type)}
            if f.required:
                entry["required"] = True
            elif f.default is not msgspec.NODEFAULT:
                entry["default"] = f.default
            fields.append(entry)
    return {
        "type": spec.type_id,
        "description": spec.description,
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "config": fields,
        "needs_end_of_input": spec.needs_end,
    }


def _type_name(tp: Any) -> str:
    text = getattr(tp, "__name__", None) if isinstance(tp, type) else None
    text = text or repr(tp).replace("typing.", "")
    # Annotated markers are noise for readers: show the underlying type.
    if text.startswith("Annotated["):
        text = text[len("Annotated[") :].split(",", 1)[0]
    return text


@cli.command("nodes")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document, for machines."
)
@click.option("--markdown", is_flag=True, help="The reference page (docs/nodes.md).")
def nodes_command(as_json: bool, markdown: bool) -> None:
    """List the node types with their ports and config fields."""
    specs = [_describe(s) for s in NodeRegistry.default()]
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
            click.echo(f"  {s['description']}")
        for f in s["config"]:
            click.echo(f"    {_field_line(f)}")


def _field_line(f: dict[str, Any]) -> str:
    if f.get("required"):
        tail = " (required)"
    elif "default" in f:
        tail = f" = {f['default']!r}"
    else:
        tail = ""
    return f"{f['name']}: {f['type']}{tail}"


def _markdown(specs: Sequence[dict[str, Any]]) -> str:
    lines = [
        "# Node types",
        "",
        "Generated by `flowstream nodes --markdown`; do not edit by hand.",
        "",
    ]
    for s in specs:
        lines += [f"## `{s['type']}`", "", s["description"] or "", ""]
        lines.append(f"- inputs: {', '.join(f'`{p}`' for p in s['inputs']) or 'none'}")
        lines.append(f"- outputs: {', '.join(f'`{p}`' for p in s['outputs'])}")
        if s["needs_end_of_input"]:
            lines.append("- emits only at end of input (not after an unbounded source)")
        if s["config"]:
            lines.append("- config:")
            lines += [f"  - `{_field_line(f)}`" for f in s["config"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI (the ``flowstream`` console script)."""
    run: Callable[..., Any] = cli.main
    run(args=list(argv) if argv is not None else None, prog_name="flowstream")
