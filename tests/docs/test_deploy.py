"""examples/deploy: the Dockerfile and the systemd unit run what they say.

No container engine runs where the tests do, so the image is not built
here: the Dockerfile's install steps run in a venv exactly as written (paths
mapped into a temporary root), and the command both of them start runs the
service for real on 127.0.0.1, which ingests records, is stopped with
SIGTERM, drains, and leaves its windows in SQLite. The unit passes
``systemd-analyze verify``.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "examples" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "flowstream.service"
SERVICE = DEPLOY / "service.yaml"
INSTALLED = "/opt/flowstream/bin/flowstream"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def image_command() -> list[str]:
    cmd = [rest for word, rest in dockerfile_instructions() if word == "CMD"]
    assert len(cmd) == 1
    argv = json.loads(cmd[0])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def unit_command() -> list[str]:
    return shlex.split(unit()["Service"]["ExecStart"])


def test_image_and_unit_start_the_same_command() -> None:
    assert image_command() == unit_command()
    argv = image_command()
    assert argv[:2] == [INSTALLED, "run"]
    assert argv[2] == "/etc/flowstream/service.yaml"


def test_dockerfile_copies_what_exists_and_every_package() -> None:
    copied: set[str] = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the context"
                copied.add(source)
    packages = re.search(r"packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    for package in re.findall(r'"([^"]+)"', packages.group(1)):
        assert package in copied, f"the image would install without {package}/"


def test_unit_is_well_formed() -> None:
    parsed = unit()
    assert set(parsed.sections()) == {"Unit", "Service", "Install"}
    service = parsed["Service"]
    assert Path(unit_command()[0]).is_absolute()
    assert service["KillSignal"] == "SIGTERM"  # the run drains on SIGTERM
    assert service["WorkingDirectory"] == "/var/lib/flowstream"
    assert service["StateDirectory"] == "flowstream"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # The same unit, with ExecStart pointing at this venv's flowstream
    # (verify checks that the program exists).
    here = Path(sys.executable).parent / "flowstream"
    text = UNIT.read_text().replace(INSTALLED, str(here))
    copy = tmp_path / "flowstream.service"
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no unknown keys either


def test_dockerfile_install_steps_run_in_a_venv(tmp_path: Path) -> None:
    """COPY and RUN as written, under tmp_path instead of /; then the CMD validates."""
    root = tmp_path / "root"

    def mapped(text: str) -> str:
        return re.sub(r"(?<![\w.])/(src|opt|etc)\b", lambda m: f"{root}/{m[1]}", text)

    for word, rest in dockerfile_instructions():
        if word == "COPY":
            *sources, target = rest.split()
            dest = Path(mapped(target))
            for source in sources:
                src = ROOT / source
                to = dest / src.name if target.endswith("/") else dest
                to.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(
                        src, to, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(src, to)
        elif word == "RUN" and not rest.startswith("useradd"):
            command = mapped(rest).replace(
                "python -m venv", f"{sys.executable} -m venv", 1
            )
            result = subprocess.run(
                command,
                shell=True,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, f"RUN {rest}\n{result.stderr[-4000:]}"
    argv = [mapped(a) for a in image_command()]
    result = subprocess.run(
        [argv[0], "validate", argv[2]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "workflow 'sensor_service' (stream mode)" in result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def send_records(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ingest") as ws:
        for i in range(5):
            record = {
                "sensor": "s1",
                "value": float(i),
                "ts": 1_000_000 + i,
            }  # epoch ms
            await ws.send(json.dumps(record))
        await ws.send("not json")


def test_the_deployed_command_runs_the_service(tmp_path: Path) -> None:
    # The unit's command line, with this venv's flowstream and the service's
    # workflow on 127.0.0.1 and a free port (the image publishes 0.0.0.0:8765).
    port = free_port()
    workflow = SERVICE.read_text()
    assert "host: 0.0.0.0" in workflow
    assert "port: 8765" in workflow
    workflow = re.sub(r"host: 0\.0\.0\.0.*", "host: 127.0.0.1", workflow)
    (tmp_path / "service.yaml").write_text(
        workflow.replace("port: 8765", f"port: {port}")
    )
    argv = unit_command()
    argv = [sys.executable, "-m", "flowstream", argv[1], "service.yaml", *argv[3:]]
    process = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: accepts(port) or process.poll() is not None, 60, "the port")
        assert process.poll() is None, process.communicate()[1]
        asyncio.run(send_records(port))
        dead = tmp_path / "dead_letters.jsonl"
        wait_until(
            lambda: dead.exists() and dead.read_text().strip(), 30, "a dead letter"
        )
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    with sqlite3.connect(tmp_path / "windows.db") as db:
        rows = db.execute("SELECT sensor, window_start, n, mean FROM sensor_windows")
        assert rows.fetchall() == [("s1", 1_000_000, 5, 2.0)]
    letter = json.loads((tmp_path / "dead_letters.jsonl").read_text().splitlines()[0])
    assert letter["node"] == "ingest"
    assert "malformed json" in letter["reason"]
    assert os.path.exists(tmp_path / "checkpoints.db")
