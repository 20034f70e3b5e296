"""No module in flowstream/ or connectors/ is over 600 lines (issue 12, point 6).

A module that grows past it is split by concept (STYLE.md, section 1): each
new module holds one idea and is named for it. The message names every
offender and its length, so one run shows all that needs splitting.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flowstream", "connectors")
MAX_LINES = 600

# Modules still over the limit, each with the length it may not pass, and
# why it is not split yet. An entry goes as soon as its module is split (a
# test below fails while an entry is stale).
PENDING: dict[str, tuple[int, str]] = {}


def lines_of(path: Path) -> int:
    """The module's length in lines (a last line with no newline counts)."""
    return len(path.read_text(encoding="utf-8").splitlines())


def oversized(
    root: Path, packages: tuple[str, ...] = PACKAGES, limit: int = MAX_LINES
) -> list[tuple[str, int]]:
    """Each module under ``root/<package>`` longer than ``limit``, with its length."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            length = lines_of(path)
            if length > limit:
                found.append((path.relative_to(root).as_posix(), length))
    return found


def test_no_module_is_over_the_limit() -> None:
    found = [
        (path, length)
        for path, length in oversized(ROOT)
        if path not in PENDING or length > PENDING[path][0]
    ]
    assert not found, f"modules over {MAX_LINES} lines (split them by concept): " + (
        ", ".join(f"{path} ({length} lines)" for path, length in found)
    )


def test_every_pending_module_is_still_over_the_limit() -> None:
    over = dict(oversized(ROOT))
    stale = [path for path in PENDING if path not in over]
    assert not stale, f"split already, take them out of PENDING: {stale}"


def test_both_packages_are_measured() -> None:
    # A renamed package must not make the check pass by measuring nothing.
    for package in PACKAGES:
        assert any((ROOT / package).rglob("*.py")), package


def test_the_check_names_each_offender_and_its_length(tmp_path: Path) -> None:
    pkg = tmp_path / "flowstream"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "ok.py").write_text("x = 1\n" * MAX_LINES)
    (pkg / "sub" / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "connectors").mkdir()
    (tmp_path / "connectors" / "huge.py").write_text("x = 1\n" * 900 + "y = 2")
    assert oversized(tmp_path) == [
        ("flowstream/sub/big.py", MAX_LINES + 1),
        ("connectors/huge.py", 901),
    ]
