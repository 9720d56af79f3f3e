"""The primary of a Redis Sentinel group SIGKILLed while jobs are in flight: the sentinels promote the
replica, and the worker (broker, result backend, records, spend) and the waiting client follow it;
every job completes, none is lost, none is billed twice. Beat follows it too, sending no tick twice.

tests/faults/sentinels.py runs the group and says why its data nodes are configured as they are.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from flowcloud.workers.core import redis_conn, replica_fence
from flowcloud.workers.core.config import load_config, use_config
from tests.conftest import config_yaml, wait_until_running
from tests.faults.scenario import SHOWN, Driver, figures
from tests.faults.sentinels import PASSWORD, SentinelGroup, require_redis_server

JOBS = 200
CONCURRENCY = 50
# Each call takes 1 s at the simulator: four waves of 50, the kill landing in the second.
SLOW = "[[sim:slow;delay=1]]"
# Short, so that a job whose finishing write went down with the primary comes back within the test.
VISIBILITY_TIMEOUT = 15


@pytest.fixture
def sentinel_group(tmp_path):
    require_redis_server()
    group = SentinelGroup(tmp_path / "group").start()
    yield group
    group.stop()


@pytest.fixture
def sentinel_config(tmp_path, sentinel_group, simulator) -> dict[str, str]:
    path = tmp_path / "flowcloud.yaml"
    path.write_text(config_yaml(sentinel_group.url, simulator.url).replace("read: 1.5", "read: 10").replace(
        "concurrency: 50}", f"concurrency: 50, visibility_timeout: {VISIBILITY_TIMEOUT}}}"))
    env = {"FLOWCLOUD_CONFIG": str(path)}
    previous = use_config(load_config({**os.environ, **env}))
    yield env
    use_config(previous)


@pytest.mark.timeout(120)
def test_jobs_follow_a_sentinel_failover(sentinel_group, sentinel_config, start_worker, simulator, tag):
    worker = start_worker(concurrency=CONCURRENCY, env=sentinel_config)
    driver = Driver(sentinel_config, JOBS, f"{SLOW} {tag}", timeout=75)
    wait_until_running(driver.job_ids, CONCURRENCY // 2)
    # The driver's submits ended with this fence: the replica held every job before the primary died.
    assert replica_fence.fence(sentinel_group.url) is replica_fence.Fence.CONFIRMED
    time.sleep(1.2)  # the first wave answered, the second in flight, half the jobs still queued

    sentinel_group.primary.kill()
    failover_seconds = sentinel_group.wait_for_promotion(timeout=30)
    records = driver.records(timeout=90)

    answered = sum(r["status"] == 200 for r in simulator.requests_log(tag))
    primary = SimpleNamespace(client=lambda: redis_conn.connect(sentinel_group.url))
    result = figures(f"Sentinel failover, primary SIGKILLed ({failover_seconds:.1f} s to promote)", records,
                     answered, primary)
    result.show()
    print(f"failover: the replica promoted {failover_seconds:.1f} s after the primary was killed")
    assert worker.process.poll() is None, f"the worker stopped:\n{worker.log()[-3000:]}"
    assert "Unrecoverable error" not in worker.log()
    assert (result.completed, result.failed, result.lost, result.billed_twice_usd) == (JOBS, 0, 0, 0)
    assert 0 <= result.duplicate_calls <= CONCURRENCY
    # The promoted replica stands alone: a fence says so instead of claiming a copy.
    assert replica_fence.fence(sentinel_group.url) is replica_fence.Fence.ALONE
    assert PASSWORD not in worker.log()


@pytest.mark.timeout(90)
def test_beat_follows_a_sentinel_failover(sentinel_group, simulator, tmp_path):
    """One Beat on the group: it rides the failover out and sends on, the lease and the schedule intact."""
    from tests.test_beat_ha import CHECKS_QUEUE, LEASE, LOOP, host, sends, wait_for

    beat = host(tmp_path, "beat", sentinel_group.url, simulator.url).start()
    primary = lambda: redis_conn.connect(sentinel_group.url)  # noqa: E731
    try:
        wait_for(lambda: len(sends(primary())) >= 2, 30, beat.log)
        sentinel_group.primary.kill()
        killed_at = time.time()
        sentinel_group.wait_for_promotion(timeout=30)
        # The ticks it sent before are on the promoted replica (or went down with the primary); it sends on.
        wait_for(lambda: sum(when > killed_at + LEASE for when, _ in sends(primary())) >= 2, 40, beat.log)
        assert beat.process.poll() is None, beat.log.read_text()[-3000:]
    finally:
        beat.signal(15)
    sent = sends(primary())
    twice = sum(later - earlier < 0.5 for (earlier, _), (later, _) in zip(sent, sent[1:]))
    gap = max(later - earlier for (earlier, _), (later, _) in zip(sent, sent[1:]))
    SHOWN.append(f"Beat through a Sentinel failover: {len(sent)} ticks in {CHECKS_QUEUE}, longest gap {gap:.1f} s "
                 f"(a tick every {LOOP:g} s), {twice} sent twice")
    assert PASSWORD not in beat.log.read_text()
    assert twice == 0, sent
