"""The fault scenarios' fixtures: a Redis of their own that they may restart (tests/faults/scenario.py
holds the rest they share; tests/conftest.py prints their figures in the run's summary)."""

from __future__ import annotations

import os

import pytest

from flowcloud.workers.core.config import load_config, use_config
from flowcloud.workers.core.embedded_redis import RedisServer
from tests.conftest import config_yaml, free_port


@pytest.fixture
def own_redis(tmp_path):
    """A Redis with appendonly on, on a port of its own: a scenario may stop, restart or pause it."""
    server = RedisServer(tmp_path / "redis", port=free_port(), persist=True).start()
    yield server
    server.process.send_signal(18)  # SIGCONT, in case a scenario left it paused
    server.stop()


@pytest.fixture
def own_config(tmp_path, own_redis, simulator) -> dict[str, str]:
    """The environment of workers and clients on ``own_redis`` (provider reads may take 10 s); this
    process reads records there too while the test runs."""
    path = tmp_path / "flowcloud.yaml"
    path.write_text(config_yaml(own_redis.url, simulator.url).replace("read: 1.5", "read: 10"))
    env = {"FLOWCLOUD_CONFIG": str(path)}
    previous = use_config(load_config({**os.environ, **env}))
    yield env
    use_config(previous)

