"""The ``flowstream`` command line: validate, run, list node types, serve.

Workflow files in ``mode: routed`` are routed flows (`flowstream.routed`):
``run`` prints their result and the path of steps taken. Dataflow files may
use the ``routed.flow`` node type.

One handler (`main`) maps flowstream's errors to messages and exit codes:
0 success, 1 a failed run, 2 invalid input. It never prints a traceback for an
error the user caused.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import textwrap
import time
import types
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import msgspec

from . import __version__
from .clirun import CliRun
from .core.codec import encode_json
from .core.workflow import Workflow, read_workflow
from .errors import (
    CodecError,
    EncodeError,
    FlowstreamError,
    Problem,
    WorkflowValidationError,
)
from .routed.bridge import dataflow_registry
from .routed.flow import Flow
from .runtime.checkpointing import CheckpointError
from .runtime.events import EventRecorder
from .runtime.flow import run_sync
from .runtime.plan import describe, plan
from .runtime.registry import NodeRegistry
from .runtime.validation import Graph, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from .core.node import NodeSpec
    from .routed.run import FlowResult
    from .runtime.protocol import Executor
    from .runtime.result import RunResult

EXIT_FAILED, EXIT_INVALID = 1, 2


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
    except (CodecError, CheckpointError, UsageProblem) as exc:
        _fail(str(exc), EXIT_INVALID)
    except ExceptionGroup as group:
        # Raised inside a task group (a checkpoint store that is no SQLite
        # file, say): still the user's error, still no traceback.
        mine, rest = group.split((CodecError, CheckpointError, UsageProblem))
        if mine is None or rest is not None:
            raise
        _fail(str(_first_leaf(mine)), EXIT_INVALID)
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        _fail(f"{name}: {exc.strerror or exc}", EXIT_INVALID)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _warn(problems: list[Problem]) -> None:
    """Print validation warnings on stderr: shown, never fatal."""
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


def load_graph(path: str, registry: NodeRegistry) -> Graph:
    """Read and validate a workflow file (raising the user-facing errors)."""
    workflow: Workflow = read_workflow(path)
    return validate(workflow, registry, source=path)


def _registry() -> NodeRegistry:
    # The built-ins and installed packs, plus routed.flow (a flow per item).
    return dataflow_registry(NodeRegistry.default())


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
        workflow = read_workflow(file)
        if workflow.mode == "routed":
            flow = Flow.from_workflow(workflow, source=file)
            click.echo(
                f"ok: {file}: workflow {workflow.name!r} (routed mode), "
                f"{len(flow.nodes)} steps, {len(flow.routes)} routes"
            )
            return
        graph = validate(workflow, _registry(), source=file)
    _warn(graph.warnings())
    wf = graph.workflow
    click.echo(
        f"ok: {file}: workflow {wf.name!r} ({wf.mode} mode), "
        f"{len(wf.nodes)} nodes, {len(wf.connections)} connections"
    )


@cli.command("plan")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--no-fuse", is_flag=True, help="Plan with fusion off.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def plan_command(file: str, no_fuse: bool, as_json: bool) -> None:
    """Show how a workflow runs: its tasks, what is fused, and why not."""
    with _user_errors():
        graph = load_graph(file, _registry())
    shown = describe(plan(graph, fuse=not no_fuse))
    if as_json:
        click.echo(encode_json(shown).decode())
        return
    click.echo(
        f"{file}: workflow {shown['workflow']!r} ({shown['mode']} mode), "
        f"{shown['nodes']} nodes in {shown['tasks']} task"
        + "s" * (shown["tasks"] != 1)
        + (f" + {len(shown['direct'])} direct calls" if shown["direct"] else "")
    )
    for seg in shown["segments"]:
        chain = " -> ".join(f"{n['id']} ({n['type']})" for n in seg["nodes"])
        click.echo(f"  task {seg['head']}: {chain}")
        click.echo(f"      own task: {seg['why_own_task']}")
    if shown["direct"]:
        how = (
            "a flat schedule, no tasks"
            if shown["dag_schedule"]
            else "the direct scheduler"
        )
        click.echo(f"  direct one-shot calls ({how}): {', '.join(shown['direct'])}")
    for ch in shown["channels"]:
        cap = "default" if ch["capacity"] is None else ch["capacity"]
        click.echo(f"  channel {', '.join(ch['from'])} => {ch['to']} (capacity {cap})")
    for ex in shown["expressions"]:
        click.echo(f"  {ex['node']}.{ex['field']} {ex['source']!r}: {ex['runs']}")


# Shared by `run` and `serve`: how long a graceful stop may take.
_drain_timeout = click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds a stop may take to drain before it aborts.",
)


@cli.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--mode", type=click.Choice(["dag", "stream"]), help="Override the file's mode."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as one JSON object."
)
@click.option(
    "--events",
    "events_path",
    type=click.Path(dir_okay=False),
    help="Record every event to this JSON Lines file.",
)
@click.option(
    "--no-fuse", is_flag=True, help="Give every node its own task (debugging)."
)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Suspended one-shot calls allowed at once.",
)
@_drain_timeout
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show live per-node counts on stderr (default: when it is a terminal).",
)
@click.option(
    "--set",
    "inputs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Routed flows: set a store key before the run (VALUE is JSON, or text).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve Prometheus metrics on 127.0.0.1:PORT while the run runs.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log to stderr as text or JSON lines, with run and node ids.",
)
@click.option(
    "--checkpoint",
    "checkpoint",
    type=click.Path(dir_okay=False),
    help="Checkpoint store (SQLite): a killed run restarted with it resumes.",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Start over: forget this workflow's run in the checkpoint store "
    "(a completed run is otherwise not run again). The sinks' previous "
    "output stays.",
)
def run_command(
    file: str,
    mode: str | None,
    as_json: bool,
    events_path: str | None,
    no_fuse: bool,
    max_parallel: int,
    drain_timeout: float,
    progress: bool | None,
    inputs: tuple[str, ...],
    metrics_port: int | None,
    log_format: str | None,
    checkpoint: str | None,
    fresh: bool,
) -> None:
    """Run a workflow; print its outputs (DAG), a summary (stream) or result.

    A routed flow (mode: routed) prints its result and the path of steps
    taken. In stream mode the first SIGINT/SIGTERM drains gracefully, a second
    one cancels. With a checkpoint store, a run that was killed resumes and a
    run that completed is not run again (``--fresh`` starts over). Exits 0
    when the run completed (or had completed), 1 when it failed, 2 on invalid
    input.
    """
    if log_format is not None:
        from .server.logs import configure_logging

        configure_logging(log_format)
    registry = _registry()
    with _user_errors():
        workflow = read_workflow(file)
        if workflow.mode == "routed":
            if mode is not None:
                msg = "--mode does not apply to a routed workflow"
                raise UsageProblem(msg)
            if metrics_port is not None:
                msg = "--metrics-port applies to dataflows, not routed workflows"
                raise UsageProblem(msg)
            flow = Flow.from_workflow(workflow, source=file)
            values = dict(_parse_input(text) for text in inputs)
        elif inputs:
            msg = "--set applies to routed workflows (mode: routed) only"
            raise UsageProblem(msg)
        elif fresh and checkpoint is None and workflow.checkpoint is None:
            msg = (
                "--fresh starts a checkpointed run over: give a store "
                "(--checkpoint FILE, or checkpoint: in the workflow)"
            )
            raise UsageProblem(msg)
        else:
            graph = validate(workflow, registry, source=file)
            _warn(graph.warnings(mode))
    if workflow.mode == "routed":
        _run_routed(flow, values, as_json, events_path)
        return
    show = progress if progress is not None else sys.stderr.isatty()
    runner = CliRun(
        graph,
        registry,
        mode=mode,
        fuse=not no_fuse,
        max_parallel=max_parallel,
        drain_timeout=drain_timeout,
        events_path=events_path,
        progress=show,
        checkpoint=checkpoint,
        fresh=fresh,
    )
    with _user_errors():
        result = run_sync(_observed(runner, metrics_port, log_format is not None))
    if as_json:
        try:
            document = encode_json(_result_document(result))
        except EncodeError as exc:
            _fail(f"cannot print the result as JSON: {exc}", EXIT_FAILED)
        click.echo(document.decode())
    else:
        _print_result(result, runner.mode, runner.stopped_by)
    if result.status != "completed":
        click.echo(f"error: {result.error}", err=True)
        sys.exit(EXIT_FAILED)


async def _observed(
    runner: CliRun, metrics_port: int | None, log_context: bool
) -> RunResult:
    """Run with the run's id in every log record and, if asked, a metrics port."""
    observers = runner.runtime.observers
    if log_context:
        from .server.logs import current_run

        def set_run(executor: Executor) -> None:
            # Set in this task before the run's tasks exist: they inherit it.
            current_run.set(executor.run_id)

        observers.append(set_run)
    if metrics_port is None:
        return await runner.run()
    try:
        from .server.metrics import RunMetricsEndpoint
    except ImportError as exc:
        msg = (
            "--metrics-port needs the server extra "
            f"(pip install 'flowstream[server]'): {exc}"
        )
        raise UsageProblem(msg) from None
    endpoint = RunMetricsEndpoint(runner.graph.workflow.name, metrics_port)
    observers.append(endpoint.attach)
    runner.options["batch_probe"] = endpoint.batch_probe
    return await endpoint.run(runner.run())


def _parse_input(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        msg = f"--set {text!r}: write KEY=VALUE"
        raise UsageProblem(msg)
    try:
        return key, msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return key, raw  # not JSON: the text itself


def _run_routed(
    flow: Flow, inputs: dict[str, Any], as_json: bool, events_path: str | None
) -> None:
    recorder = EventRecorder(events_path) if events_path else None
    if recorder is not None:
        recorder.attach(flow.bus)
    try:
        result = asyncio.run(flow.arun(inputs=inputs))
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_FAILED)
    finally:
        if recorder is not None:
            recorder.close()
    if as_json:
        with _user_errors():
            doc = encode_json(_flow_document(result))
        click.echo(doc.decode())
    else:
        click.echo(
            f"{result.status}: run {result.run_id} in {result.duration_s:.3f}s "
            f"(routed mode), {result.steps} step{'s' * (result.steps != 1)}"
        )
        click.echo(f"path: {' -> '.join(result.path)}")
        if result.ok:
            click.echo(f"result: {_short(result.result, 400)}")
    if not result.ok:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(EXIT_FAILED)


def _flow_document(result: FlowResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "run_id": result.run_id,
        "result": result.result,
        "path": result.path,
        "error": result.error,
        "failed_node": result.failed_node,
        "duration_s": round(result.duration_s, 6),
    }


def _result_document(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "run_id": result.run_id,
        "outputs": result.outputs,
        "dead_letters": [msgspec.to_builtins(d) for d in result.dead_letters],
        "dead_letters_not_kept": result.dead_letters_not_kept,
        "stats": {k: msgspec.to_builtins(v) for k, v in result.stats.items()},
        "error": result.error,
        "duration_s": round(result.duration_s, 6),
        "skipped": result.skipped,
    }


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_result(result: RunResult, mode: str, stopped_by: str | None) -> None:
    if result.skipped is not None:
        click.echo(f"{result.skipped} ({mode} mode)")
        return
    if stopped_by:
        # Say what happened: a drain that timed out (or a second signal)
        # cancelled the run rather than draining it.
        how = "drained" if result.status == "completed" else result.error
        click.echo(f"stopped by {stopped_by}; {how}")
    click.echo(
        f"{result.status}: run {result.run_id} in {result.duration_s:.3f}s "
        f"({mode} mode)"
    )
    for node_id, ports in result.outputs.items():
        for port, values in ports.items():
            click.echo(f"{node_id}.{port} ({len(values)} items)")
            for v in values[:_SHOWN]:
                click.echo(f"  {_short(v)}")
            if len(values) > _SHOWN:
                click.echo(f"  ... {len(values) - _SHOWN} more (use --json for all)")
    if result.dead_letters:
        click.echo(f"dead letters ({len(result.dead_letters)}):")
        for d in result.dead_letters[:_SHOWN]:
            click.echo(f"  {d.node_id}: {d.reason} <- {_short(d.item, 60)}")
    click.echo("node stats:")
    for node_id, st in result.stats.items():
        rate = st.items_out / st.duration_s if st.duration_s > 0 else 0.0
        click.echo(
            f"  {node_id:<20} in {st.items_in:>10,}  out {st.items_out:>10,}  "
            f"errors {st.errors:>4}  {rate:>12,.0f}/s"
        )


_SHOWN = 20


@cli.command("checkpoints")
@click.argument("store", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option(
    "--forget-failures",
    is_flag=True,
    help="Forget the records that failed runs (after fixing them), so a "
    "poison record no longer keeps its run from starting.",
)
def checkpoints_command(store: str, as_json: bool, forget_failures: bool) -> None:
    """List the runs in a checkpoint store: progress, positions, failed records.

    For a stream run, the last committed epoch and each node's position in
    it (source offsets and sequences, sinks' committed sizes and rows).
    """
    from .runtime.checkpointing import CheckpointStore

    async def read() -> tuple[list[Any], dict[str, list[Any]], int]:
        async with CheckpointStore(store) as ckpt:
            forgotten = await ckpt.forget_failures() if forget_failures else 0
            runs = await ckpt.runs()
            failures = {r.run_key: await ckpt.failures(r.run_key) for r in runs}
            return runs, failures, forgotten

    with _user_errors():
        runs, failures, forgotten = asyncio.run(read())
    if forget_failures:
        click.echo(f"{store}: forgot {forgotten} failed record(s)")
    if as_json:
        click.echo(
            msgspec.json.encode(
                [
                    {**msgspec.structs.asdict(r), "failures": failures[r.run_key]}
                    for r in runs
                ]
            ).decode()
        )
        return
    if not runs:
        click.echo(f"{store}: no runs")
        return
    click.echo(
        f"{'run key':<18} {'workflow':<20} {'status':<10} {'tries':>5}  progress"
    )
    for r in runs:
        progress = (
            f"epoch {r.epoch}" if r.epoch is not None else f"{r.nodes_done} nodes done"
        )
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated))
        click.echo(
            f"{r.run_key:<18} {r.workflow:<20} {r.status:<10} {r.attempts:>5}  "
            f"{progress} (updated {updated})"
        )
        for node_id, values in r.positions.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            click.echo(f"{'':<18} {node_id}: {shown}")
        for p in failures[r.run_key]:
            click.echo(
                f"{'':<18} failed {p.count} run(s) at node {p.node_id!r}: "
                f"{p.record} ({p.reason})"
            )


def _describe(spec: NodeSpec) -> dict[str, Any]:
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
        "example": _example(spec),
    }


def _example(spec: NodeSpec) -> str:
    """The ``Example:`` section of a node type's docstring, dedented."""
    doc = inspect.getdoc(spec.fn) or ""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() in ("Example:", "Examples:"):
            body: list[str] = []
            for text in lines[i + 1 :]:
                if text.strip() and not text.startswith((" ", "\t")):
                    break
                body.append(text)
            return textwrap.dedent("\n".join(body)).strip()
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
        return " | ".join(_type_name(a) for a in args)
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
    "  (docs/sandbox.md says what can be enforced in-process).",
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
        lines += [f"## `{s['type']}`", "", s["description"] or "", ""]
        named = " (plus ports named in the config)" if s["ports_from_config"] else ""
        inputs = ", ".join(f"`{p}`" for p in s["inputs"]) or "none"
        lines.append(f"- inputs: {inputs}{named if not s['inputs'] else ''}")
        lines.append(f"- outputs: {', '.join(f'`{p}`' for p in s['outputs'])}{named}")
        if s["needs_end_of_input"]:
            lines.append("- emits only at end of input (not after an unbounded source)")
        if s["config"]:
            lines.append("- config:")
            lines += [f"  - `{_field_line(f)}`" for f in s["config"]]
        if s["example"]:
            lines += [
                "",
                "Example:",
                "",
                *(f"    {t}" for t in s["example"].splitlines()),
            ]
        lines.append("")
    return "\n".join(lines)


@cli.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; beyond loopback every endpoint needs the token.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--db",
    default="flowstream.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="SQLite file of workflows and runs (created if missing).",
)
@click.option(
    "--allow-module",
    "allow_modules",
    multiple=True,
    metavar="MODULE",
    help="Let uploaded workflows name callables of this module (repeatable).",
)
@click.option(
    "--allow-node",
    "allow_nodes",
    multiple=True,
    metavar="TYPE",
    help="Allow a node type that reaches the server's files (repeatable).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="The only directory uploaded workflows' files may be in [default: <db>.data].",
)
@click.option(
    "--allow-net",
    "allow_net",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Let uploaded workflows connect to this host (a name, *.domain, an "
    "address or CIDR block; repeatable). Default: nowhere.",
)
@click.option(
    "--allow-private-net",
    is_flag=True,
    help="Let them reach loopback, link-local and private addresses too.",
)
@click.option(
    "--allow-listen",
    "allow_listen",
    multiple=True,
    metavar="ADDRESS",
    help="Let their listening nodes bind this address beyond loopback "
    "(0.0.0.0 for all; repeatable).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    metavar="NAME",
    help="Answer requests whose Host is NAME too (besides 127.0.0.1, "
    "localhost, [::1] and --host; repeatable).",
)
@click.option(
    "--max-runs",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Runs allowed at once.",
)
@click.option(
    "--max-body",
    type=click.IntRange(min=1),
    default=1 << 20,
    show_default=True,
    help="Largest request body in bytes.",
)
@click.option(
    "--sandbox-time-limit",
    "sandbox_time_limit",
    type=click.FloatRange(min=0, min_open=True),
    default=1000.0,
    show_default=True,
    metavar="MS",
    help="Most time per call an uploaded wasm node may ask for (limits).",
)
@click.option(
    "--sandbox-memory-pages",
    "sandbox_memory_pages",
    type=click.IntRange(min=1, max=65_536),
    default=256,
    show_default=True,
    help="Most 64 KiB memory pages an uploaded wasm node may ask for.",
)
@_drain_timeout
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def serve_command(
    host: str,
    port: int,
    db: str,
    allow_modules: tuple[str, ...],
    allow_nodes: tuple[str, ...],
    data_dir: str | None,
    allow_net: tuple[str, ...],
    allow_private_net: bool,
    allow_listen: tuple[str, ...],
    allow_hosts: tuple[str, ...],
    max_runs: int,
    max_body: int,
    sandbox_time_limit: float,
    sandbox_memory_pages: int,
    drain_timeout: float,
    log_format: str,
) -> None:
    """Serve the HTTP/WebSocket API and the web UI until SIGINT/SIGTERM.

    Workflows and run records persist in the SQLite file. Mutating endpoints
    need the bearer token: FLOWSTREAM_TOKEN, or one generated at first start,
    kept beside the database (mode 0600) and printed once.
    """
    from .server.config import ServerConfig

    try:
        from .server.serve import serve
    except ImportError as exc:
        _fail(
            f"serve needs the server extra (pip install 'flowstream[server]'): {exc}",
            EXIT_INVALID,
        )
    with _user_errors():
        try:
            config = ServerConfig(
                db=db,
                host=host,
                allow_modules=allow_modules,
                allow_nodes=allow_nodes,
                data_dir=data_dir,
                allow_net=allow_net,
                allow_private_net=allow_private_net,
                allow_listen=allow_listen,
                allow_hosts=allow_hosts,
                max_runs=max_runs,
                max_body_bytes=max_body,
                drain_timeout=drain_timeout,
                sandbox_time_limit_ms=sandbox_time_limit,
                sandbox_memory_pages=sandbox_memory_pages,
            )
            serve(config, port=port, log_format=log_format, out=sys.stdout)
        except ValueError as exc:
            # A setting, the token or the database, all checked before serving.
            raise UsageProblem(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI (the ``flowstream`` console script)."""
    run: Callable[..., Any] = cli.main
    run(args=list(argv) if argv is not None else None, prog_name="flowstream")
