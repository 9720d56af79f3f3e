"""Redis restarted, or paused, while jobs are in flight: the worker stays up, the client waiting on
its results reconnects, every job completes once, and no record is lost or rewritten.

Without flowcloud's Redis transport (flowcloud.workers.core.redis_transport) the worker stopped
here with kombu's ``AttributeError: 'NoneType' object has no attribute 'hostname'``, and every job
in flight stayed ``running``.
"""

import signal
import time

import pytest

from tests.conftest import wait_until_running
from tests.faults.scenario import Driver, figures, rewritten

JOBS = 60
# Each call takes 2 s at the simulator, so the outage comes while calls are in flight.
SLOW = "[[sim:slow;delay=2]]"


def restart(redis, down_for: float) -> None:
    redis.stop()  # SIGTERM: Redis writes its append-only file and exits
    time.sleep(down_for)
    redis.start()


def pause(redis, paused_for: float) -> None:
    redis.process.send_signal(signal.SIGSTOP)
    time.sleep(paused_for)
    redis.process.send_signal(signal.SIGCONT)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenario, outage", [
    ("Redis restarted for 2 s", lambda redis: restart(redis, 2.0)),
    ("Redis paused for 10 s", lambda redis: pause(redis, 10.0)),
])
def test_jobs_in_flight_live_through_a_redis_outage(own_redis, own_config, start_worker, simulator, tag,
                                                    scenario, outage):
    worker = start_worker(concurrency=JOBS, env=own_config)
    driver = Driver(own_config, JOBS, f"{SLOW} {tag}", timeout=150)
    # Every job is received before the outage: a message that Redis pops for a BRPOP in the instant it
    # goes down is gone with the reply (kombu's Redis transport acks by emulation, after the pop), a
    # window no client-side code closes; RabbitMQ's acknowledgements have none (docs/scaling.md).
    wait_until_running(driver.job_ids, JOBS)
    outage(own_redis)
    records = driver.records(timeout=180)

    answered = sum(r["status"] == 200 for r in simulator.requests_log(tag))
    result = figures(scenario, records, answered, own_redis)
    result.show()
    assert worker.process.poll() is None, f"the worker stopped:\n{worker.log()[-3000:]}"
    assert "Unrecoverable error" not in worker.log()
    assert (result.completed, result.failed, result.lost, result.billed_twice_usd) == (JOBS, 0, 0, 0)
    # A job redelivered while its first run was still calling calls again: never more than were in flight.
    assert 0 <= result.duplicate_calls <= JOBS
    time.sleep(1)  # anything still running would have written by now
    assert rewritten(records, own_redis) == []
