"""How the CLI shows things: rich on a terminal, plain text otherwise.

Data goes to stdout (a DAG run's collected outputs, ``--json`` documents);
summaries, statistics, dead letters and progress go to stderr, so
``flowstream run … | jq`` reads only records. On a terminal the summary is a
`rich` table with colour (``NO_COLOR`` turns colour off, rich honours it);
piped, it is plain text with no escape codes. Times are shown as ISO 8601 in
UTC with milliseconds; only the display rounds, never the data.

`rich` is imported inside the functions that draw with it: ``flowstream
--version`` must not pay for it.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from ..core.events import NodeStats
    from ..runtime.result import DeadLetter, RunResult

SHOWN = 20  # values and dead letters printed per port; --json has all

_INSTANCE_ID = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\[(\d+)\]$")


def iso_utc(epoch_s: float) -> str:
    """``epoch_s`` (seconds since the epoch) as ISO 8601 UTC with milliseconds."""
    moment = _dt.datetime.fromtimestamp(epoch_s, tz=_dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_rich(stream: TextIO) -> bool:
    """Draw with rich on ``stream``: a terminal that is not ``TERM=dumb``."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def console(stream: TextIO) -> Console:
    """A rich console on ``stream`` (colour off with NO_COLOR, rich's rule)."""
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=False)


def recent_rate(stats: NodeStats) -> float | None:
    """The node's items/s over the last few seconds (None: too early to say).

    The rate out, or, for a node that has taken items and emitted none (a
    sink), the rate in: what it writes. Computed by the runtime
    (`flowstream.runtime.rates`), the same numbers the server shows.
    """
    if stats.items_out or not stats.items_in:
        return stats.rate_out
    return stats.rate_in


def grouped(stats: dict[str, NodeStats]) -> list[tuple[str, NodeStats]]:
    """Rows of a statistics table: each node as declared, then its instances.

    A node with ``parallelism`` > 1 runs as instances (``count[0]``,
    ``count[1]``): it shows as one row with their sums, followed by one
    indented row per instance (``  [0]``). Partition steps the expansion
    added (ids no workflow can declare) are left out.
    """
    import msgspec

    from ..core.events import summed_stats
    from ..core.workflow import NODE_ID

    rows: list[tuple[str, NodeStats]] = []
    groups: dict[str, list[NodeStats]] = {}
    for node_id, st in stats.items():
        declared = st.instance_of
        if declared is None:
            if NODE_ID.match(node_id):
                rows.append((node_id, st))
                continue
            # An instance whose stats do not say so (``count[1]``).
            found = _INSTANCE_ID.match(node_id)
            if found is None:
                continue  # a partition step or another engine-made node
            declared = found[1]
            st = msgspec.structs.replace(
                st, instance_of=declared, instance=int(found[2])
            )
        if declared not in groups:
            groups[declared] = []
            rows.append((declared, st))  # replaced by the sum below
        groups[declared].append(st)
    out: list[tuple[str, NodeStats]] = []
    for label, st in rows:
        members = groups.get(label) if st.instance_of is not None else None
        if members is None:
            out.append((label, st))
            continue
        out.append((label, summed_stats(members)))
        out.extend((f"  [{m.instance}]", m) for m in members)
    return out


def restart_line(
    *,
    attempt: int,
    reason: str,
    delay_s: float,
    max_attempts: int | None,
    checkpointed: bool,
    from_epoch: int | None,
) -> str:
    """A restart in one line, for stderr (the fields of its `RunRestarted`)."""
    limit = "" if max_attempts is None else f"/{max_attempts}"
    if from_epoch is not None:
        origin = f"resumes from checkpoint epoch {from_epoch}"
    elif checkpointed:
        origin = "resumes from its checkpoint store"
    else:
        origin = "starts over (no checkpoint store)"
    return (
        f"restart {attempt}{limit} in {delay_s:g}s: the run failed: "
        f"{reason}; it {origin}"
    )


def short(value: Any, limit: int = 100) -> str:
    """``repr(value)``, cut to ``limit`` characters with a visible mark."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def print_outputs(result: RunResult, out: TextIO | None = None) -> None:
    """A DAG run's collected outputs, the run's data: on stdout."""
    out = out if out is not None else sys.stdout
    for node_id, ports in result.outputs.items():
        for port, values in ports.items():
            print(f"{node_id}.{port} ({len(values)} items)", file=out)
            for v in values[:SHOWN]:
                print(f"  {short(v)}", file=out)
            if len(values) > SHOWN:
                print(
                    f"  ... {len(values) - SHOWN} more (use --json for all)", file=out
                )


def print_summary(
    result: RunResult,
    mode: str,
    stopped_by: str | None,
    err: TextIO | None = None,
) -> None:
    """Status, dead letters and node statistics: on stderr."""
    err = err if err is not None else sys.stderr
    if result.skipped is not None:
        print(f"{result.skipped} ({mode} mode)", file=err)
        return
    lines: list[str] = []
    if stopped_by:
        # Say what happened: a drain that timed out (or a second signal)
        # cancelled the run rather than draining it.
        how = "drained" if result.status == "completed" else result.error
        lines.append(f"stopped by {stopped_by}; {how}")
    status = (
        f"{result.status}: run {result.run_id} in {result.duration_s:.3f}s "
        f"({mode} mode)"
    )
    dead = [
        f"  {_letter_node(d)}: {d.reason} <- {short(d.item, 60)}"
        for d in result.dead_letters[:SHOWN]
    ]
    if is_rich(err):
        _rich_summary(result, lines, status, dead, err)
        return
    for line in lines:
        print(line, file=err)
    print(status, file=err)
    if result.dead_letters:
        print(f"dead letters ({len(result.dead_letters)}):", file=err)
        for line in dead:
            print(line, file=err)
    print("node stats:", file=err)
    for node_id, st in grouped(result.stats):
        rate = _run_average(st)
        print(
            f"  {node_id:<20} in {st.items_in:>10,}  out {st.items_out:>10,}  "
            f"errors {st.errors:>4}  {rate:>12,.0f}/s",
            file=err,
        )


def _letter_node(d: DeadLetter) -> str:
    # The declared node, and which instance of a parallel one.
    if d.instance is None:
        return d.node_id
    return f"{d.node_id} (instance {d.instance} of {d.instances})"


def _run_average(st: NodeStats) -> float:
    # The average over the whole run: what a finished run reports; for a
    # sink (items in, none out), what it wrote.
    done = st.items_out or st.items_in
    return done / st.duration_s if st.duration_s > 0 else 0.0


def _rich_summary(
    result: RunResult, lines: list[str], status: str, dead: list[str], err: TextIO
) -> None:
    from rich.table import Table
    from rich.text import Text

    con = console(err)
    for line in lines:
        con.print(line)
    colour = "green" if result.status == "completed" else "red"
    con.print(Text(status, style=f"bold {colour}"))
    if result.dead_letters:
        con.print(Text(f"dead letters ({len(result.dead_letters)}):", style="yellow"))
        for line in dead:
            con.print(Text(line))
    table = Table(title=None, show_edge=False, header_style="bold")
    table.add_column("node")
    for name in ("in", "out", "errors", "items/s (run)"):
        table.add_column(name, justify="right")
    for node_id, st in grouped(result.stats):
        errors = Text(f"{st.errors:,}", style="red" if st.errors else "")
        table.add_row(
            node_id,
            f"{st.items_in:,}",
            f"{st.items_out:,}",
            errors,
            f"{_run_average(st):,.0f}",
        )
    con.print(table)
