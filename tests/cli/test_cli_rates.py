"""The CLI shows the runtime's recent rates; a sink's rate is what it wrote."""

from __future__ import annotations

from flowstream.cli._display import _run_average, recent_rate
from flowstream.core.events import NodeStats


def stats(
    items_in: int, items_out: int, rate_in: float | None, rate_out: float | None
) -> NodeStats:
    return NodeStats(
        items_in=items_in,
        items_out=items_out,
        duration_s=2.0,
        rate_in=rate_in,
        rate_out=rate_out,
    )


def test_progress_shows_the_rate_out_of_a_node_that_emits() -> None:
    assert recent_rate(stats(100, 50, 40.0, 20.0)) == 20.0


def test_a_sink_shows_the_rate_it_writes_at() -> None:
    assert recent_rate(stats(100, 0, 40.0, 0.0)) == 40.0


def test_too_early_to_say_is_none_not_a_huge_number() -> None:
    assert recent_rate(stats(10, 10, None, None)) is None


def test_the_final_table_averages_what_a_sink_wrote() -> None:
    assert _run_average(stats(100, 0, None, None)) == 50.0
    assert _run_average(stats(100, 60, None, None)) == 30.0
