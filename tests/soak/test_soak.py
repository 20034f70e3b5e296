"""The short soak: the full soak's code path, scaled to well under a minute."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from tests.soak.report import SoakConfig
from tests.soak.soak import run_soak

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_short_soak_loses_nothing_and_writes_nothing_twice(
    tmp_path: Path,
) -> None:
    # Every fault point (epoch 0 included), random kills, two snapshots
    # resumed, and a flood with every class of bad frame.
    config = SoakConfig(
        seed=11,
        kills=12,
        duration=10.0,
        rate=1000.0,
        snapshots=2,
        flood_good=2000,
        flood_bad=20,
        workdir=tmp_path / "soak",
        limit=120.0,
    )
    out = io.StringIO()
    code = await run_soak(config, out)
    assert code == 0, out.getvalue()
    text = out.getvalue()
    assert "nothing lost, nothing twice" in text
