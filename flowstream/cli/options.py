"""Options more than one command takes."""

from __future__ import annotations

import click

# Shared by `run` and `serve`: how long a graceful stop may take.
_drain_timeout = click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds a stop may take to drain before it aborts.",
)
