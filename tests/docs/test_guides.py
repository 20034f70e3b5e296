"""Every fenced code block of the guides runs (see tests/docs/guides.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.docs.guides import GUIDES, blocks, matches, run_page

if TYPE_CHECKING:
    from pathlib import Path

PAGES = sorted(GUIDES.glob("*.md"))

# Blocks marked {skip} across all guides; raise it only with a good reason.
MAX_SKIPPED = 6


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_guide_blocks_run(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


def test_skipped_blocks_are_few_and_say_why() -> None:
    skipped = [b for p in PAGES for b in blocks(p) if "skip" in b.options]
    assert all(b.rest for b in skipped), [b.where for b in skipped if not b.rest]
    assert len(skipped) <= MAX_SKIPPED, [f"{b.where}: {b.rest}" for b in skipped]


def test_runner_catches_a_wrong_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nraise SystemExit(3)\n```\n")
    with pytest.raises(AssertionError, match="script failed"):
        run_page(page, tmp_path)


def test_runner_compares_console_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```yaml {file=wf.yaml}\nname: w\nnodes:\n"
        "  - {id: a, type: source.range, config: {stop: 3}}\n"
        "  - {id: b, type: sink.collect}\nconnections: [a -> b]\n```\n\n"
        "```console\n$ flowstream validate wf.yaml\n"
        "ok: wf.yaml: workflow 'x' ...\n```\n"
    )
    with pytest.raises(AssertionError, match="differs"):
        run_page(page, tmp_path)


def test_runner_refuses_unknown_languages_and_other_commands(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```sh\nrm -rf /\n```\n")
    with pytest.raises(AssertionError, match="is not run"):
        run_page(page, tmp_path)
    page.write_text("```console\n$ curl localhost\n```\n")
    with pytest.raises(AssertionError, match="only flowstream commands"):
        run_page(page, tmp_path)


def test_ellipsis_matches_anything() -> None:
    assert matches("ok: ... 4 nodes", "ok: workflow 'n' (dag mode), 4 nodes")
    assert not matches("ok: ... 5 nodes", "ok: workflow 'n' (dag mode), 4 nodes")
