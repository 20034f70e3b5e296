"""The distribution ships its types (PEP 561): py.typed in every package."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_packaged_package_has_py_typed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(wheel["packages"]) == {"flowstream", "connectors"}
    for package in wheel["packages"]:
        assert (ROOT / package / "py.typed").is_file(), package
    # Nothing keeps the marker out of the wheel.
    assert "exclude" not in wheel
    assert "only-include" not in wheel
