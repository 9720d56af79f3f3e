"""A provider failing a third of its calls in every way it can, over 2,000 jobs: 30% 429 with
Retry-After, 10% 503, 5% connection resets and 5% answers slower than the read timeout.
Every job completes within its retry bound, and no retry comes earlier than its Retry-After."""

from collections import defaultdict

import pytest

from flowcloud import client
from tests.conftest import config_yaml, start_simulator
from tests.faults.scenario import figures

JOBS = 2_000
FAULTS = "429;retry-after=1=0.3,503=0.1,reset=0.05,slow;delay=3=0.05"
# Half the calls fail: 16 attempts leave a job a 0.5^16 chance (1 in 65,536) of running out.
MAX_ATTEMPTS = 16


@pytest.fixture
def faulty():
    sim = start_simulator("--fault-rate", FAULTS, "--seed", "13")
    yield sim
    sim.stop()


@pytest.mark.timeout(600)
def test_every_job_completes_through_provider_faults_and_no_retry_is_early(faulty, redis_server, start_worker,
                                                                          tmp_path, tag):
    path = tmp_path / "flowcloud.yaml"
    path.write_text(config_yaml(redis_server.url, faulty.url)
                    .replace("max_attempts: 4", f"max_attempts: {MAX_ATTEMPTS}").replace("read: 1.5", "read: 1"))
    start_worker(concurrency=200, env={"FLOWCLOUD_CONFIG": str(path)})
    job_ids = client.submit_many([f"#{i} {tag}" for i in range(JOBS)], cache=False)
    records = client.wait_all(job_ids, timeout=480)

    log = faulty.requests_log(tag, limit=20_000)  # every request of the run: about 4,000
    result = figures("provider faults", records, sum(r["status"] == 200 for r in log), redis_server)
    result.show()
    assert (result.completed, result.failed, result.lost, result.billed_twice_usd) == (JOBS, 0, 0, 0)
    assert max(r["attempts"] for r in records) <= MAX_ATTEMPTS
    assert early_retries(log) == []
    # The duplicate calls are the answers that came after their call's read timeout (the slow faults,
    # and any answer the loaded machine held back past it): the provider bills them, flowcloud does not.


def early_retries(log: list[dict]) -> list[str]:
    """Each request that came sooner after a 429 of the same prompt than that 429's Retry-After."""
    by_prompt: dict[str, list[dict]] = defaultdict(list)
    for request in log:
        by_prompt[request["prompt"]].append(request)
    early = []
    for prompt, requests in by_prompt.items():
        requests.sort(key=lambda r: r["t"])
        for sent, then in zip(requests, requests[1:]):
            fault = sent["fault"] or ""
            if fault.startswith("429") and then["t"] - sent["t"] < retry_after(fault):
                early.append(f"{prompt!r}: {then['t'] - sent['t']:.3f} s after {fault}")
    return early


def retry_after(fault: str) -> float:
    options = dict(part.split("=", 1) for part in fault.split(";")[1:])
    return float(options.get("retry-after", 0))
