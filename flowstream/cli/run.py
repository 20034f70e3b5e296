"""``run``: run a workflow file; print its outputs, summary or result."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..clirun import CliRun
    from ..routed.flow import Flow
    from ..routed.run import FlowResult
    from ..runtime.protocol import Executor
    from ..runtime.result import RunResult

from ._base import (
    EXIT_FAILED,
    EXIT_INVALID,
    UsageProblem,
    _fail,
    _registry,
    _user_errors,
    _warn,
    cli,
)
from ._display import print_outputs, print_summary, short
from .options import _drain_timeout


@cli.command("run", short_help="Run a workflow file.")
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
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the run runs: this process, or Ray actors (one per "
    "parallel slot; needs the ray extra; docs/scale-out.md).",
)
@click.option(
    "--address",
    "ray_address",
    metavar="HOST:PORT",
    help="With --backend ray: the Ray cluster to join (default: start a "
    "local Ray with this machine's cores).",
)
@click.option(
    "--restart",
    type=click.Choice(["no", "on-failure"]),
    default="no",
    show_default=True,
    help="Start a failed run again, from its last checkpoint when it has a "
    "store (each restart is a RunRestarted event).",
)
@click.option(
    "--max-restarts",
    type=click.IntRange(min=0),
    default=None,
    help="Restarts allowed in all [default: 3; none with failure-rate].",
)
@click.option(
    "--restart-backoff",
    default="fixed:1s",
    show_default=True,
    metavar="SPEC",
    help="fixed:DELAY, exponential:INITIAL:MAX[:FACTOR] or "
    "failure-rate:N/INTERVAL:DELAY (durations: 250ms, 10s, 5m, 1h).",
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
    backend: str,
    ray_address: str | None,
    restart: str,
    max_restarts: int | None,
    restart_backoff: str,
) -> None:
    """Run a workflow; print its outputs (DAG), a summary (stream) or result.

    A routed flow (mode: routed) prints its result and the path of steps
    taken. In stream mode the first SIGINT/SIGTERM drains gracefully, a second
    one cancels. With a checkpoint store, a run that was killed resumes and a
    run that completed is not run again (--fresh starts over). Exits 0
    when the run completed (or had completed), 1 when it failed, 2 on invalid
    input.
    """
    from ..clirun import CliRun
    from ..core.codec import encode_json
    from ..core.workflow_files import read_workflow
    from ..errors import EncodeError
    from ..runtime.blocking import run_sync
    from ..runtime.validation import validate

    if log_format is not None:
        from ..server.logs import configure_logging

        configure_logging(log_format)
    from ._restart import RestartPolicy, RestartSpecError

    policy: RestartPolicy | None = None
    if restart == "on-failure":
        try:
            policy = RestartPolicy.parse(restart_backoff, max_restarts)
        except RestartSpecError as exc:
            _fail(str(exc), EXIT_INVALID)
    with _user_errors():
        workflow = read_workflow(file)
        if workflow.mode == "routed":
            if mode is not None:
                msg = "--mode does not apply to a routed workflow"
                raise UsageProblem(msg)
            if metrics_port is not None:
                msg = "--metrics-port applies to dataflows, not routed workflows"
                raise UsageProblem(msg)
            if policy is not None:
                msg = "--restart applies to dataflows, not routed workflows"
                raise UsageProblem(msg)
            from ..routed.flow import Flow

            flow = Flow.from_workflow(workflow, source=file)
            values = dict(_parse_input(text) for text in inputs)
        elif inputs:
            msg = "--set applies to routed workflows (mode: routed) only"
            raise UsageProblem(msg)
        elif ray_address is not None and backend != "ray":
            msg = "--address names a Ray cluster: it goes with --backend ray"
            raise UsageProblem(msg)
        elif fresh and checkpoint is None and workflow.checkpoint is None:
            msg = (
                "--fresh starts a checkpointed run over: give a store "
                "(--checkpoint FILE, or checkpoint: in the workflow)"
            )
            raise UsageProblem(msg)
        else:
            registry = _registry(workflow)
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
        restart=policy,
    )
    if backend != "local":
        runner.options["backend"] = backend
        runner.options["ray_address"] = ray_address
    with _user_errors():
        result = run_sync(_observed(runner, metrics_port, log_format is not None))
    if as_json:
        try:
            document = encode_json(
                {**_result_document(result), "restarts": runner.restarts}
            )
        except EncodeError as exc:
            _fail(f"cannot print the result as JSON: {exc}", EXIT_FAILED)
        click.echo(document.decode())
    else:
        print_outputs(result)
        print_summary(result, runner.mode, runner.stopped_by)
        if policy is not None:
            click.echo(f"restarts: {runner.restarts}", err=True)
    if runner.gave_up is not None:
        click.echo(f"restart: {runner.gave_up}", err=True)
    if result.status != "completed":
        click.echo(f"error: {result.error}", err=True)
        sys.exit(EXIT_FAILED)


async def _observed(
    runner: CliRun, metrics_port: int | None, log_context: bool
) -> RunResult:
    """Run with the run's id in every log record and, if asked, a metrics port."""
    observers = runner.runtime.observers
    if log_context:
        from ..server.logs import current_run

        def set_run(executor: Executor) -> None:
            # Set in this task before the run's tasks exist: they inherit it.
            current_run.set(executor.run_id)

        observers.append(set_run)
    if metrics_port is None:
        return await runner.run()
    try:
        from ..server.metrics import RunMetricsEndpoint
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
    import msgspec

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
    import asyncio

    from ..core.codec import encode_json
    from ..runtime.events import EventRecorder

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
        # The summary on stderr, the result (the data) on stdout.
        click.echo(
            f"{result.status}: run {result.run_id} in {result.duration_s:.3f}s "
            f"(routed mode), {result.steps} step{'s' * (result.steps != 1)}",
            err=True,
        )
        click.echo(f"path: {' -> '.join(result.path)}", err=True)
        if result.ok:
            click.echo(f"result: {short(result.result, 400)}")
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
    import msgspec

    return {
        "status": result.status,
        "run_id": result.run_id,
        "outputs": result.outputs,
        "dead_letters": [msgspec.to_builtins(d) for d in result.dead_letters],
        "dead_letters_not_kept": result.dead_letters_not_kept,
        "outputs_dropped": result.outputs_dropped,
        "stats": {k: msgspec.to_builtins(v) for k, v in result.stats.items()},
        "error": result.error,
        "duration_s": round(result.duration_s, 6),
        "skipped": result.skipped,
    }
