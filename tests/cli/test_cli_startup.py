"""Start-up: the command line imports the engine only when a command needs it.

Each check runs a fresh interpreter and reads its ``sys.modules``: timing
targets live in benchmarks/bench_startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Never imported by `import flowstream.cli` (nor by --version / --help).
HEAVY = (
    "flowstream.runtime",
    "flowstream.routed",
    "flowstream.nodes",
    "flowstream.server",
    "flowstream.core.codec",
    "connectors",
    "httpx",
    "websockets",
    "aiokafka",
    "redis",
    "nats",
    "wasmtime",
    "litestar",
    "uvicorn",
    "msgspec",
    "cel",
    "asyncio",
)
CLIENTS = ("httpx", "websockets", "aiokafka", "redis", "nats", "wasmtime")


def loaded_after(code: str, cwd: Path = ROOT) -> set[str]:
    """The modules loaded once ``code`` ran in a new interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    last = done.stdout.strip().splitlines()[-1]
    return set(json.loads(last))


def heavy(modules: set[str], prefixes: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(
        m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)
    )


def test_importing_the_cli_imports_no_runtime_server_or_clients() -> None:
    assert heavy(loaded_after("import flowstream.cli")) == []


def test_version_and_help_import_nothing_heavy() -> None:
    for args in (["--version"], ["--help"], ["run", "--help"]):
        code = (
            "import sys\nfrom flowstream.cli import main\n"
            f"sys.argv = ['flowstream', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass"
        )
        assert heavy(loaded_after(code)) == [], args


def test_the_public_api_still_loads_on_first_use() -> None:
    # `import flowstream` is lazy; the first public name brings the rest.
    modules = loaded_after("import flowstream\nflowstream.Flow")
    assert "flowstream.runtime.local" in modules
    assert "flowstream.routed.flow" in modules


def validate_in_subprocess(path: Path) -> set[str]:
    code = (
        "import sys\nfrom flowstream.cli import main\n"
        f"sys.argv = ['flowstream', 'validate', {str(path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    assert not exc.code, exc.code"
    )
    return loaded_after(code, cwd=path.parent)


def test_validate_of_builtin_nodes_loads_no_connector(tmp_path: Path) -> None:
    wf = tmp_path / "numbers.yaml"
    wf.write_text((ROOT / "examples" / "numbers.yaml").read_text())
    modules = validate_in_subprocess(wf)
    assert heavy(modules, ("connectors", *CLIENTS)) == []
    # Validation did happen (the CEL expressions were compiled).
    assert "flowstream.runtime.validation" in modules


def test_validate_of_a_connector_node_loads_the_packs(tmp_path: Path) -> None:
    wf = tmp_path / "files.yaml"
    wf.write_text(
        "name: lines\nnodes:\n"
        "  - {id: read, type: file.source, config: {path: in.txt}}\n"
        "  - {id: out, type: sink.collect}\n"
        "connections:\n  - read -> out\n"
    )
    modules = validate_in_subprocess(wf)
    assert "connectors.files" in modules
