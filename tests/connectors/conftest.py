"""Session-wide broker servers (see `tests.connectors.servers`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.connectors.servers import (
    Server,
    kafka_server,
    nats_server,
    redis_server,
    running,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(redis_server(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(nats_server(tmp_path_factory.mktemp("nats"))) as server:
        yield server


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(kafka_server(tmp_path_factory.mktemp("kafka"))) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A Redis of the test's own, which it may stop and restart."""
    with running(redis_server(tmp_path_factory.mktemp("own-redis"))) as server:
        yield server


@pytest.fixture
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A NATS server of the test's own, which it may stop and restart."""
    with running(nats_server(tmp_path_factory.mktemp("own-nats"))) as server:
        yield server
