"""``validate``, ``plan`` and ``checkpoints``: look at a workflow or a store."""

from __future__ import annotations

from typing import Any

import click

from ._base import _registry, _user_errors, _warn, cli, load_graph
from ._display import iso_utc

EPOCHS_SHOWN = 5  # latest epochs listed per run; --json has the store's 20


@cli.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def validate_command(file: str) -> None:
    """Check a workflow file and name every problem in it."""
    from ..core.workflow_files import read_workflow
    from ..runtime.validation import validate

    with _user_errors():
        workflow = read_workflow(file)
        if workflow.mode == "routed":
            from ..routed.flow import Flow

            flow = Flow.from_workflow(workflow, source=file)
            click.echo(
                f"ok: {file}: workflow {workflow.name!r} (routed mode), "
                f"{len(flow.nodes)} steps, {len(flow.routes)} routes"
            )
            return
        graph = validate(workflow, _registry(workflow), source=file)
    _warn(graph.warnings())
    wf = graph.workflow
    click.echo(
        f"ok: {file}: workflow {wf.name!r} ({wf.mode} mode), "
        f"{len(wf.nodes)} nodes, {len(wf.connections)} connections"
    )


@cli.command("plan", short_help="Show how a workflow runs: tasks and fusion.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--no-fuse", is_flag=True, help="Plan with fusion off.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def plan_command(file: str, no_fuse: bool, as_json: bool) -> None:
    """Show how a workflow runs: its tasks, what is fused, and why not."""
    from ..core.codec import encode_json
    from ..runtime.plan import describe, plan

    with _user_errors():
        graph = load_graph(file)
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
    for user in shown["lifting"]:
        click.echo(f"  generator {user['node']} ({user['type']}): {user['runs']}")
    parallel = shown["parallel"]
    if parallel:
        for gid, info in parallel["nodes"].items():
            if info["parallelism"] > 1:
                reads = f": {info['reads']}" if "reads" in info else ""
                click.echo(
                    f"  parallelism {gid}: {info['parallelism']} instances "
                    f"({', '.join(info['instances'])}){reads}"
                )
        for edge in parallel["edges"]:
            key = f" by {edge['key']}" if "key" in edge else ""
            click.echo(
                f"  edge {edge['from']} -> {edge['to']}: {edge['kind']}{key}, "
                f"{edge['instances']} ({edge['means']})"
            )


@cli.command("checkpoints", short_help="List the runs in a checkpoint store.")
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
    it (source offsets and sequences, sinks' committed sizes and rows), when
    it last restored, and its latest epochs: commit time, duration (barrier
    to commit) and size of the snapshot.
    """
    import asyncio

    import msgspec

    from ..runtime.checkpointing import CheckpointStore

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
        updated = iso_utc(r.updated)
        click.echo(
            f"{r.run_key:<18} {r.workflow:<20} {r.status:<10} {r.attempts:>5}  "
            f"{progress} (updated {updated})"
        )
        if r.parallelism:
            shown = ", ".join(f"{k}={v}" for k, v in r.parallelism.items())
            click.echo(f"{'':<18} parallelism: {shown}")
        for node_id, move in r.rescaled.items():
            click.echo(
                f"{'':<18} {node_id}: state redistributed from {move['from']} to "
                f"{move['to']} instance(s) by key group at the restore of epoch "
                f"{move['epoch']} ({move['keys']} entries)"
            )
        if r.restored is not None:
            click.echo(f"{'':<18} last restored {iso_utc(r.restored)}")
        for e in r.epochs[:EPOCHS_SHOWN]:
            click.echo(
                f"{'':<18} epoch {e.epoch}: committed {iso_utc(e.committed)}, "
                f"{e.duration_s * 1000:,.1f} ms, {e.size:,} bytes"
            )
        if len(r.epochs) > EPOCHS_SHOWN:
            click.echo(f"{'':<18} ... {len(r.epochs) - EPOCHS_SHOWN} earlier epochs")
        for node_id, values in r.positions.items():
            shown = ", ".join(f"{k}={v}" for k, v in values.items())
            click.echo(f"{'':<18} {node_id}: {shown}")
        for p in failures[r.run_key]:
            click.echo(
                f"{'':<18} failed {p.count} run(s) at node {p.node_id!r}: "
                f"{p.record} ({p.reason})"
            )
