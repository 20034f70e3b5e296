"""The command line's server side: serve, run --metrics-port, --log-format json."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

import httpx
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from flowstream.cli import cli

from .conftest import NUMBERS, free_socket

if TYPE_CHECKING:
    from pathlib import Path


def free_port() -> int:
    with free_socket() as sock:
        port: int = sock.getsockname()[1]
        return port


def flowstream(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FLOWSTREAM_TOKEN", None)
    return subprocess.Popen(
        [sys.executable, "-m", "flowstream", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_up(url: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.communicate()[1])
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    msg = f"{url} did not come up"
    raise AssertionError(msg)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    return out, err


def test_serve_prints_a_generated_token_once(tmp_path: Path) -> None:
    port = free_port()
    args = ("serve", "--port", str(port), "--db", str(tmp_path / "fs.db"))
    proc = flowstream(*args, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/api/health", proc)
        token = (tmp_path / "fs.db.token").read_text().strip()
        assert (tmp_path / "fs.db.token").stat().st_mode & 0o777 == 0o600
        r = httpx.put(f"{base}/api/workflows/numbers", json=NUMBERS)
        assert r.status_code == 401
        r = httpx.put(
            f"{base}/api/workflows/numbers",
            json=NUMBERS,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200
    finally:
        out, _ = stop(proc)
    assert token in out
    assert f"{base}/#token={token}" in out

    proc = flowstream(*args, "--log-format", "json", cwd=tmp_path)
    try:
        wait_until_up(f"{base}/api/health", proc)
        names = [w["name"] for w in httpx.get(f"{base}/api/workflows").json()]
        assert names == ["numbers"]
    finally:
        out, err = stop(proc, signal.SIGINT)
    assert token not in out
    assert token not in err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert records
    assert all(
        {"time", "level", "logger", "message", "run_id"} <= set(r) for r in records
    )


def test_run_serves_metrics_and_logs_json(tmp_path: Path) -> None:
    workflow = {
        "name": "slow",
        "nodes": [
            {
                "id": "tick",
                "type": "source.timer",
                "config": {"interval_ms": 10, "count": 150},
            },
            {
                "id": "say",
                "type": "debug.log",
                "config": {"level": "warning", "every": 50},
            },
        ],
        "connections": ["tick -> say"],
    }
    path = tmp_path / "slow.json"
    path.write_text(json.dumps(workflow))
    port = free_port()
    proc = flowstream(
        "run",
        str(path),
        "--metrics-port",
        str(port),
        "--log-format",
        "json",
        cwd=tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until_up(url, proc)
        moved = 0.0
        deadline = time.monotonic() + 20
        while not moved and time.monotonic() < deadline:
            try:
                text = httpx.get(url, timeout=1).text
            except httpx.TransportError:
                break  # the run ended
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if (
                        s.name == "flowstream_node_items_out_total"
                        and s.labels["node"] == "tick"
                    ):
                        moved = s.value
            time.sleep(0.05)
        assert moved > 0
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    node_records = [r for r in logged if r["node_id"] == "say"]
    assert node_records
    run_id = node_records[0]["run_id"]
    assert run_id
    # The summary (on stderr; stdout has the outputs) names the same run.
    assert f"completed: run {run_id} " in err
    assert out.startswith("say.out (")  # the outputs, the run's data


def test_metrics_port_is_for_dataflows(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: r\nmode: routed\nnodes:\n"
        "  - {id: done, type: step.complete, config: {result: '1'}}\n"
    )
    result = CliRunner().invoke(cli, ["run", str(flow), "--metrics-port", "9999"])
    assert result.exit_code == 2
    assert "--metrics-port applies to dataflows" in result.stderr


def test_serve_takes_the_trust_flags(tmp_path: Path) -> None:
    from .test_network import Target, request_workflow

    target = Target()
    thread = threading.Thread(target=target.serve_forever, daemon=True)
    thread.start()
    port = free_port()
    data = tmp_path / "uploads"
    args = (
        "serve",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "fs.db"),
        "--data-dir",
        str(data),
        "--allow-net",
        f"127.0.0.1:{target.port}",
    )
    proc = flowstream(*args, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/api/health", proc)
        token = (tmp_path / "fs.db.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        doc = request_workflow(f"http://127.0.0.1:{target.port}/")
        doc["checkpoint"] = {"path": "fetch.ckpt"}
        r = httpx.put(f"{base}/api/workflows/fetch", json=doc, headers=auth)
        assert r.status_code == 200, r.text
        run_id = httpx.post(f"{base}/api/workflows/fetch/runs", headers=auth).json()[
            "run_id"
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            detail = httpx.get(f"{base}/api/runs/{run_id}").json()
            if detail["status"] != "running":
                break
            time.sleep(0.05)
        assert detail["status"] == "completed", detail
        # Another loopback port of the same host is not allowed.
        doc = request_workflow(f"http://127.0.0.1:{port}/api/health")
        r = httpx.put(f"{base}/api/workflows/fetch", json=doc, headers=auth)
        assert r.status_code == 422
    finally:
        stop(proc)
        target.shutdown()
        target.server_close()
    assert target.hits == 1
    assert (data / "fetch.ckpt").exists()
    assert not (tmp_path / "fetch.ckpt").exists()


def test_serve_refuses_a_bad_allow_pattern(tmp_path: Path) -> None:
    db = str(tmp_path / "fs.db")
    result = CliRunner().invoke(cli, ["serve", "--db", db, "--allow-net", "[::1"])
    assert result.exit_code == 2
    assert "allow pattern '[::1'" in result.output


async def test_each_restart_is_counted_once_in_the_run_metrics(tmp_path: Path) -> None:
    # `flowstream run --restart on-failure --metrics-port N`: every attempt
    # has its own executor on the same bus; each RunRestarted counts once,
    # and each failed attempt ends its watch (no watch left running).
    from flowstream import default_registry
    from flowstream.cli._restart import RestartPolicy
    from flowstream.cli.run import _observed
    from flowstream.clirun import CliRun
    from flowstream.core.workflow import parse_workflow
    from flowstream.runtime.validation import validate
    from flowstream.server.metrics import RunMetricsEndpoint

    registry = default_registry()
    graph = validate(
        parse_workflow(
            {
                "name": "always",
                "nodes": [
                    {"id": "n", "type": "source.range", "config": {"stop": 3}},
                    {
                        "id": "boom",
                        "type": "transform.map",
                        "config": {"expr": "1 / 0"},
                    },
                    {"id": "out", "type": "sink.collect"},
                ],
                "connections": ["n -> boom", "boom -> out"],
            }
        ),
        registry,
    )
    policy = RestartPolicy.parse("fixed:1ms", 2)
    said = io.StringIO()
    runner = CliRun(graph, registry, restart=policy, stream=said)
    seen: list[object] = []
    runner.runtime.observers.append(seen.append)
    result = await _observed(runner, free_port(), False)
    assert result.status == "failed"
    assert runner.restarts == 2
    assert said.getvalue().count("it starts over (no checkpoint store)") == 2
    assert len(seen) == 3  # three attempts, three executors
    (endpoint,) = [
        bound
        for o in runner.runtime.observers
        if isinstance(bound := getattr(o, "__self__", None), RunMetricsEndpoint)
    ]
    value = endpoint.metrics.registry.get_sample_value
    assert value("flowstream_run_restarts_total", {"workflow": "always"}) == 2
    assert value("flowstream_runs", {"status": "running"}) == 0
    assert value("flowstream_runs", {"status": "failed"}) == 3
