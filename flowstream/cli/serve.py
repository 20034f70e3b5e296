"""``serve``: the HTTP/WebSocket API and the web UI."""

from __future__ import annotations

import sys

import click

from ._base import (
    EXIT_INVALID,
    UsageProblem,
    _fail,
    _user_errors,
    cli,
)
from .options import _drain_timeout


@cli.command("serve", short_help="Serve the HTTP/WebSocket API and the web UI.")
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
    from ..server.config import ServerConfig

    try:
        from ..server.serve import serve
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
