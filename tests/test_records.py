"""The record store's guarantees, against the real Redis: a finished record never changes,
a job is billed once, and a waiting reader wakes when the job finishes."""

import threading

import pytest

from flowcloud.workers.core.records import JobRecord, JobStatus, JobStore
from flowcloud.workers.core.errors import ServerError


@pytest.fixture
def store(redis_server):
    from flowcloud.workers.core.redis_conn import connect

    return JobStore(connect(redis_server.url), ttl=60)


def test_a_finished_record_is_never_overwritten(store):
    store.create(JobRecord(job_id="j1", status=JobStatus.QUEUED))
    assert store.succeed("j1", text="first", cost_usd=0.25) is True
    assert store.succeed("j1", text="second", cost_usd=0.25) is False  # a redelivered duplicate
    assert store.fail("j1", ServerError("late", provider="p")) is False
    record = store.get("j1")
    assert (record.status, record.text, record.error) == (JobStatus.SUCCEEDED, "first", None)
    assert store.spent_usd() == pytest.approx(0.25)  # billed once


def test_spend_is_exact_over_many_jobs(store):
    for i in range(1000):
        store.succeed(f"job-{i}", cost_usd=0.000123)
    assert store.spent_usd() == pytest.approx(0.123, abs=1e-12)


def test_failure_is_recorded_with_its_classification(store):
    store.fail("j2", ServerError("gateway down", provider="main", status=502), attempts=3)
    record = store.get("j2")
    assert record.status is JobStatus.FAILED and record.attempts == 3
    assert record.error == {"kind": "server_error", "message": "gateway down", "retryable": True,
                            "provider": "main", "status": 502, "request_id": None}


def test_records_expire(store, redis_server):
    store.create(JobRecord(job_id="j3", status=JobStatus.QUEUED))
    assert 0 < redis_server.client().ttl("flowcloud:job:j3") <= 60


def test_wait_wakes_when_the_job_finishes(store):
    store.create(JobRecord(job_id="j4", status=JobStatus.RUNNING))
    threading.Timer(0.3, lambda: store.succeed("j4", text="done")).start()
    record = store.wait("j4", timeout=30)
    assert record.status is JobStatus.SUCCEEDED and record.text == "done"


def test_wait_gives_the_current_state_at_the_deadline(store):
    store.create(JobRecord(job_id="j5", status=JobStatus.RETRYING))
    assert store.wait("j5", timeout=0.2).status is JobStatus.RETRYING
    assert store.wait("missing", timeout=0.2) is None


def test_pipelined_writes_share_one_round_trip_and_survive_a_redis_that_forgot_its_scripts(store):
    from flowcloud.workers.core.records import running, succeeded
    from flowcloud.workers.core.redis_conn import replies_of

    store.create_many([JobRecord(job_id=f"p{i}", status=JobStatus.QUEUED) for i in range(3)])
    store.client.script_flush()  # as after a Redis restart: the scripts are known by SHA only
    pipe = store.client.pipeline(transaction=False)
    readers = [store.write_in(pipe, "p0", running({"attempts": 1})),
               store.write_in(pipe, "p1", succeeded({"text": "done", "cost_usd": 0.5}))]
    pipe.get("unrelated")
    replies = replies_of(pipe)
    assert [read(replies) for read in readers] == [True, True]
    assert next(replies) is None
    assert [store.get(f"p{i}").status for i in range(3)] == [JobStatus.RUNNING, JobStatus.SUCCEEDED,
                                                             JobStatus.QUEUED]
    assert store.spent_usd() == pytest.approx(0.5)

    pipe = store.client.pipeline(transaction=False)
    again = store.write_in(pipe, "p1", succeeded({"text": "a late duplicate", "cost_usd": 0.5}))
    assert again(replies_of(pipe)) is False
    assert store.get("p1").text == "done" and store.spent_usd() == pytest.approx(0.5)


def test_any_text_survives_the_write_script(store):
    text = 'naïve café 東京 "quoted" \\ back\\slash \n newline \u2028 😀'
    store.create(JobRecord(job_id="u1", status=JobStatus.QUEUED))
    assert store.succeed("u1", text=text, usage={"prompt_tokens": 3, "completion_tokens": 2**40})
    record = store.get("u1")
    assert record.text == text and record.usage.completion_tokens == 2**40
