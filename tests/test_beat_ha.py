"""Two Beats on one Redis: one sends; when it is killed the other takes over within the lease, and no
tick goes out twice.

Each Beat runs as a separate host would: a real `flowcloud beat` in a working
directory of its own, with its own configuration file and var_dir (the same
Redis) and its own node name. The schedule is the alert check every second,
under a 4 s lease renewed every second. No worker runs, so every message a Beat
sent stays in the checks queue, where the test reads who sent it (the
``origin`` header names the sending process) and when (the ``expires`` header,
one check period after the send).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from flowcloud.workers.core.config import load_config
from flowcloud.workers.core.errors import ConfigError
from tests.conftest import config_yaml

CHECKS_QUEUE = "flowcloud.checks"  # as flowcloud.workers.core.celery_app names it; imported late, see test_beat
CHECK_ENTRY_KEY = "flowcloud:beat:check-alerts"
PERIOD = 1.0  # alerts.check_seconds
LEASE = 4  # beat.lock_seconds
LOOP = 1.0  # beat.loop_seconds
MARGIN = 3.0  # a loaded 2-core machine: a tick, a Redis round trip and the send, late


@dataclass
class Host:
    name: str
    directory: Path
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.directory / f"beat-{self.starts}.log"

    def start(self) -> Host:
        self.starts += 1
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flowcloud.cli", "beat", "--hostname", f"{self.name}@%h"],
                cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "FLOWCLOUD_CONFIG": str(self.directory / "flowcloud.yaml")})
        wait_for(lambda: "beat: Starting" in self.log.read_text(), 60, self.log)
        return self

    @property
    def origin(self) -> str:
        return f"gen{self.process.pid}@"

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)
            self.process.wait(20)


def host(tmp_path: Path, name: str, redis_url: str, sim_url: str) -> Host:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "flowcloud.yaml").write_text(
        config_yaml(redis_url, sim_url) + f"var_dir: {directory / 'var'}\n"
        f"alerts: {{check_seconds: {PERIOD}, models_check_seconds: null}}\n"
        f"beat: {{lock_seconds: {LEASE}, loop_seconds: {LOOP}}}\n")
    return Host(name, directory)


def sends(redis) -> list[tuple[float, str]]:
    """Every check Beat sent, oldest first: (when, the sending process's origin)."""
    sent = []
    for raw in redis.lrange(CHECKS_QUEUE, 0, -1):
        headers = json.loads(raw)["headers"]
        sent.append((datetime.fromisoformat(headers["expires"]).timestamp() - PERIOD, headers["origin"]))
    return sorted(sent)


def wait_for(condition, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, log.read_text()[-3000:] if log else "timed out"
        time.sleep(0.1)


def test_a_standby_beat_takes_over_a_killed_one_and_no_tick_is_sent_twice(tmp_path, redis_server, simulator):
    redis = redis_server.client()
    active, standby = (host(tmp_path, name, redis_server.url, simulator.url) for name in ("beat-a", "beat-b"))
    try:
        active.start()
        wait_for(lambda: len(sends(redis)) >= 1, 30, active.log)
        standby.start()
        both_from = time.time()
        wait_for(lambda: sum(when > both_from + 2 * LOOP for when, _ in sends(redis)) >= 4, 30, active.log)
        assert all(origin.startswith(active.origin) for _, origin in sends(redis)), "both Beats sent"
        assert "Acquired lock" not in standby.log.read_text()

        killed_at = time.time()
        active.signal(signal.SIGKILL)
        wait_for(lambda: any(o.startswith(standby.origin) for _, o in sends(redis)), LEASE + LOOP + 30, standby.log)
        takeover = min(w for w, o in sends(redis) if o.startswith(standby.origin)) - killed_at

        active.start()  # as a supervisor would restart it: it stands by now, and sends nothing
        restarted_at = time.time()
        wait_for(lambda: sum(when > restarted_at and o.startswith(standby.origin) for when, o in sends(redis))
                 >= LEASE + 2 * LOOP, 30, standby.log)
        assert not any(o.startswith(active.origin) for _, o in sends(redis)), "the restarted Beat sent"
    finally:
        active.signal(signal.SIGTERM)
        standby.signal(signal.SIGTERM)

    sent = sends(redis)
    twice = sum(later - earlier < PERIOD / 2 for (earlier, _), (later, _) in zip(sent, sent[1:]))
    runs = json.loads(redis.hget(CHECK_ENTRY_KEY, "meta"))["total_run_count"]
    print(f"beat takeover: {takeover:.1f} s (lease {LEASE} s, loop {LOOP:g} s), {len(sent)} ticks sent, "
          f"{twice} sent twice", file=sys.stderr)
    show(f"beat takeover: {takeover:.1f} s after SIGKILL (lease {LEASE} s), {len(sent)} ticks sent, {twice} sent twice")
    assert 0 < takeover <= LEASE + LOOP + MARGIN, takeover
    assert twice == 0, sent
    # Each tick is reserved in Redis before it is sent: a Beat killed between the two loses one at most.
    assert len(sent) <= runs <= len(sent) + 1


def show(line: str) -> None:
    from tests.faults.scenario import SHOWN  # listed in the run's summary beside the fault scenarios' figures

    SHOWN.append(line)


def test_a_lease_shorter_than_two_ticks_is_refused(tmp_path):
    path = tmp_path / "flowcloud.yaml"
    path.write_text("beat: {lock_seconds: 3, loop_seconds: 2}\n")

    with pytest.raises(ConfigError) as raised:
        load_config({"FLOWCLOUD_CONFIG": str(path)})
    assert raised.value.field == "beat.lock_seconds" and "twice loop_seconds" in str(raised.value)
