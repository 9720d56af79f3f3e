"""A worker SIGKILLed with 500 jobs in flight, bundled and single: once a new worker starts, all 500
finish, none lost, none billed twice; the calls made twice are at most the jobs that were in flight.
On Redis the messages come back after the visibility timeout; on RabbitMQ once the dead worker's
connection drops."""

import pytest

from flowcloud import client
from tests.conftest import config_yaml, wait_until_running
from tests.faults.scenario import figures

JOBS = 500
# Calls take 15 s, so the kill finds them all in flight (submitting 500 takes seconds);
# their messages come back once unacknowledged for 25 s.
SLOW = "[[sim:slow;delay=15]]"
VISIBILITY_TIMEOUT = 25


@pytest.mark.timeout(300)
def test_jobs_of_a_killed_worker_all_finish_once_on_the_next(broker, redis_server, simulator, start_worker,
                                                           tmp_path, tag):
    path = tmp_path / "flowcloud.yaml"
    path.write_text(config_yaml(redis_server.url, simulator.url)
                    .replace("read: 1.5", "read: 20")
                    .replace("worker: {pool: threads, concurrency: 50}",
                             f"worker: {{pool: threads, concurrency: {JOBS}, "
                             f"visibility_timeout: {VISIBILITY_TIMEOUT}}}"))
    env = {"FLOWCLOUD_CONFIG": str(path)}
    first = start_worker(concurrency=JOBS, env=env)
    prompts = [f"#{i} {SLOW} {tag}" for i in range(JOBS)]
    job_ids = client.submit_many(prompts[:JOBS // 2], cache=False) + [client.submit(p, cache=False)
                                                                       for p in prompts[JOBS // 2:]]
    # Every job running, so no message is between the queue and the worker: kombu's Redis transport
    # pops a message before it records it unacknowledged, and one popped in that instant by a worker
    # killed then is lost (RabbitMQ's acknowledgements have no such window).
    wait_until_running(job_ids, JOBS, timeout=120)
    in_flight = sum(client.status(job_id)["status"] == "running" for job_id in job_ids)
    first.kill()
    start_worker(concurrency=JOBS, env=env)
    records = client.wait_all(job_ids, timeout=200)

    answered = sum(r["status"] == 200 for r in simulator.requests_log(tag, limit=5_000))
    result = figures(f"worker SIGKILLed with {in_flight} jobs running ({broker})", records, answered, redis_server)
    result.show()
    assert (result.completed, result.failed, result.lost, result.billed_twice_usd) == (JOBS, 0, 0, 0)
    assert result.duplicate_calls <= JOBS
