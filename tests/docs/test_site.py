"""The documentation site builds with every warning and broken reference an error.

CI runs ``make test`` only, so this is what keeps ``make docs`` green: a
docstring that Sphinx cannot parse, a page missing from the toctree, or a
reference to a flowstream object that does not exist fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flowstream

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    # The Makefile's flags: warnings are errors, references are checked.
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-b",
            "html",
            "-W",
            "--keep-going",
            "-n",
            "-E",
            "-q",
            str(source),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = sphinx_build(DOCS, out)
    assert result.returncode == 0, f"docs build failed:\n{result.stderr}"
    return out


def test_site_builds_without_warnings(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "api.html").is_file()


def test_api_reference_documents_every_public_name(site: Path) -> None:
    html = (site / "api.html").read_text()
    ids = set(re.findall(r'id="(flowstream\.[A-Za-z_]+)"', html))
    missing = [n for n in flowstream.__all__ if f"flowstream.{n}" not in ids]
    assert not missing, f"not in the API reference: {missing}"


def test_every_markdown_page_is_on_the_site(site: Path) -> None:
    pages = [
        p.relative_to(DOCS).with_suffix(".html")
        for p in DOCS.rglob("*.md")
        if "_build" not in p.parts
    ]
    absent = [str(p) for p in pages if not (site / p).is_file()]
    assert not absent, f"pages not built: {absent}"


def test_a_broken_reference_fails_the_build(tmp_path: Path) -> None:
    # The site's own configuration, on one page that names a missing object.
    source = tmp_path / "docs"
    source.mkdir()
    shutil.copy(DOCS / "conf.py", source)
    shutil.copytree(DOCS / "_ext", source / "_ext")
    (source / "index.md").write_text(
        "# Broken\n\nSee {py:class}`flowstream.NoSuchThing`.\n"
    )
    result = sphinx_build(source, tmp_path / "site")
    assert result.returncode != 0
    assert "flowstream.NoSuchThing" in result.stderr
