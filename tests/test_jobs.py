"""Jobs end to end: the client, Redis, real worker processes and the simulator over HTTP."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from flowcloud import client
from tests.conftest import run_cli, wait_until_running
from flowcloud.workers.core.errors import InvalidJob, JobNotFound, JobTimeout
from flowcloud.simulator import answer_for

RECORD_FIELDS = {"job_id", "status", "text", "provider", "model", "flow", "worker", "usage", "cost_usd",
                 "attempts", "cached", "error"}


def test_cli_submit_wait_json_then_result(broker, worker, tag):
    done = run_cli("submit", f"hello {tag}", "--wait", "--json", "--timeout", "30", "--flow", "cli")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert RECORD_FIELDS <= set(record)
    assert record["status"] == "succeeded" and record["text"] == answer_for(f"hello {tag}")
    assert record["worker"] == worker.hostname  # produced by the worker process, not in here
    assert (record["provider"], record["model"], record["flow"], record["attempts"]) == ("sim", "gpt-4o-mini", "cli", 1)
    assert record["usage"]["prompt_tokens"] > 0 and record["cost_usd"] > 0 and record["cached"] is False

    again = run_cli("result", record["job_id"], "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == record


def test_retry_after_is_honoured_without_holding_the_slot(broker, start_worker, simulator, tag):
    single_slot = start_worker(concurrency=1)
    slow = client.submit(f"busy {tag} [[sim:429;times=2;retry-after=2]]")
    quick = client.submit(f"quick {tag}")

    slow_record, quick_record = client.result(slow, timeout=30), client.result(quick, timeout=30)
    assert slow_record["status"] == "succeeded" and slow_record["attempts"] == 3
    assert quick_record["status"] == "succeeded"
    assert quick_record["worker"] == slow_record["worker"] == single_slot.hostname
    assert quick_record["finished_at"] < slow_record["finished_at"]  # it ran while the other waited

    calls = simulator.requests_log(f"busy {tag}")
    assert [c["status"] for c in calls] == [429, 429, 200]
    gaps = [later["t"] - earlier["t"] for earlier, later in zip(calls, calls[1:])]
    assert all(gap >= 2.0 for gap in gaps), gaps


def test_rejected_key_fails_at_once_naming_the_provider(worker, tag):
    record = client.result(client.submit(f"{tag} hello", model="needs-other-key"), timeout=30)
    assert record["status"] == "failed" and record["attempts"] == 1
    assert record["error"]["kind"] == "authentication"
    assert "rejected rejected the API key" in record["error"]["message"]


def test_malformed_answers_are_a_classified_failure(worker, tag):
    record = client.result(client.submit(f"{tag} [[sim:malformed]]"), timeout=30)
    assert record["status"] == "failed" and record["attempts"] == 4  # retried up to max_attempts
    assert record["error"]["kind"] == "malformed_response"


def test_a_timeout_is_retried(worker, tag):
    record = client.result(client.submit(f"{tag} [[sim:slow;delay=4;times=1]]"), timeout=30)
    assert record["status"] == "succeeded" and record["attempts"] == 2 and record["error"] is None


def test_a_bad_job_fails_alone(worker, tag):
    bad = client.submit(f"{tag} bad [[sim:400]]")
    good = client.submit(f"{tag} good")
    assert client.result(good, timeout=30)["status"] == "succeeded"
    failed = client.result(bad, timeout=30)
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["error"]["kind"] == "bad_request"


def test_bad_input_is_refused_before_queueing():
    with pytest.raises(InvalidJob, match="empty"):
        client.submit("   ")
    with pytest.raises(InvalidJob, match="unknown option"):
        client.submit("hi", temprature=0.2)
    with pytest.raises(InvalidJob, match="role"):
        client.submit([{"role": "wizard", "content": "hi"}])
    with pytest.raises(InvalidJob, match="no provider serves model 'gpt-9'"):
        client.submit("hi", model="gpt-9")


def test_status_wait_timeout_and_cancel(tag):
    job_id = client.submit(f"{tag} nobody is working")  # no worker runs in this test
    assert client.status(job_id)["status"] == "queued"
    with pytest.raises(JobTimeout):
        client.result(job_id, timeout=0.3)
    assert client.cancel(job_id) is True
    assert client.result(job_id, timeout=1)["status"] == "cancelled"
    with pytest.raises(JobNotFound):
        client.status("no-such-job")


def test_messages_and_options_reach_the_provider(worker, tag):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"{tag} question"}]
    record = client.result(client.submit(messages, max_tokens=5, temperature=0.1), timeout=30)
    assert record["status"] == "succeeded"
    assert record["usage"]["completion_tokens"] <= 5


def test_killed_worker_jobs_complete_and_bill_once(start_worker, redis_server, tag):
    env = {"FLOWCLOUD_WORKER__VISIBILITY_TIMEOUT": "5"}
    doomed = start_worker(concurrency=20, env=env)
    jobs = [client.submit(f"{tag} job {i} [[sim:slow;delay=1]]") for i in range(10)]
    wait_until_running(jobs, 10)
    doomed.kill()

    start_worker(concurrency=20, env=env)
    records = [client.result(j, timeout=60) for j in jobs]
    assert all(r["status"] == "succeeded" for r in records), records
    from flowcloud.workers.core.records import JobStore
    from flowcloud.workers.core.config import get_config

    assert JobStore.open(get_config()).spent_usd() == pytest.approx(sum(r["cost_usd"] for r in records))


def test_a_cache_hit_is_answered_at_submit_without_a_task(worker, simulator, redis_server, tag):
    prompt = f"{tag} what is a queue?"
    first = client.result(client.submit(prompt, flow="faq", temperature=0.0), timeout=30)
    assert first["status"] == "succeeded" and first["cached"] is False and first["cost_usd"] > 0

    hit_id = client.submit(prompt, flow="faq", temperature=0.0)
    hit = client.status(hit_id)  # finished already: no waiting
    assert hit["status"] == "succeeded" and hit["cached"] is True and hit["cost_usd"] == 0
    assert (hit["text"], hit["usage"], hit["provider"], hit["model"]) == (
        first["text"], first["usage"], first["provider"], first["model"])
    assert hit["worker"] is None and redis_server.client().llen("flowcloud") == 0  # never queued
    assert len(simulator.requests_log(tag)) == 1

    # What changes the answer changes the key; another flow has its own namespace; opting out calls again.
    for kwargs in ({"flow": "faq", "temperature": 0.5}, {"flow": "other", "temperature": 0.0},
                   {"flow": "faq", "temperature": 0.0, "cache": False}):
        record = client.result(client.submit(prompt, **kwargs), timeout=30)
        assert record["cached"] is False and record["worker"] == worker.hostname, kwargs
    assert len(simulator.requests_log(tag)) == 4


def test_identical_jobs_in_flight_make_one_provider_call(worker, simulator, tag):
    prompt = f"{tag} the same question from fifty nodes [[sim:slow;delay=1]]"
    jobs = client.submit_many([prompt] * 50)  # all queued before any answer exists
    records = client.wait_all(jobs, timeout=60)
    assert [r["status"] for r in records] == ["succeeded"] * 50
    assert {r["text"] for r in records} == {answer_for(prompt)}
    assert len(simulator.requests_log(tag)) == 1
    leaders = [r for r in records if not r["cached"]]
    assert len(leaders) == 1 and leaders[0]["cost_usd"] > 0 and leaders[0]["attempts"] == 1
    assert all(r["cost_usd"] == 0 and r["attempts"] == 0 for r in records if r["cached"])



def test_hundreds_of_threads_wait_for_results_at_once(tag):
    """A Langflow server with many nodes waiting holds one Redis connection per waiter: more than
    redis-py's default pool of 100 must wait side by side, not fail."""
    jobs = client.submit_many([f"{tag} nobody runs this {i}" for i in range(150)])  # no worker: all stay queued
    barrier = threading.Barrier(len(jobs))

    def wait(job_id: str) -> str:
        barrier.wait()
        try:
            client.result(job_id, timeout=2)
        except JobTimeout:
            return "timed out"
        return "finished"

    with ThreadPoolExecutor(len(jobs)) as pool:
        outcomes = list(pool.map(wait, jobs))
    assert outcomes == ["timed out"] * len(jobs)
