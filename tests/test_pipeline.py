"""The job pipeline's exit paths: whatever ends a job, it leaves no flight and no budget hold behind,
except a retry, which keeps its hold for the next attempt.

The pipeline runs in this process on a runtime of the test's own (``Runtime.build``),
against the session's real Redis and the simulator as a real HTTP server.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from flowcloud import client
from flowcloud.workers.budget import JOB_PREFIX
from flowcloud.workers.core.cache import FLIGHT_PREFIX
from flowcloud.workers.core.config import validate
from flowcloud.workers.core.records import JobRecord, JobStatus
from flowcloud.workers.pipeline import CHAT, Ending, Job, Pipeline, Stage
from flowcloud.workers.pipeline.bundle import Bundle
from flowcloud.workers.runtime import Runtime
from tests.conftest import config_yaml


class Broken(Stage):
    """A stage that breaks in one of its hooks."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def before(self, job):
        if self.hook == "before":
            raise RuntimeError("a stage broke before the call")

    def after(self, job, outcome, pipe):
        if self.hook == "after":
            raise RuntimeError("a stage broke after the call")


@pytest.fixture
def runtime(redis_server, simulator):
    data = yaml.safe_load(config_yaml(redis_server.url, simulator.url))
    config = validate({**data, "budgets": [{"name": "all", "period": "daily", "limit_usd": 100.0}]})
    built = Runtime.build(config, calls_in_flight=4)
    yield built
    built.close()


def run(runtime, prompt: str, attempt: int = 1, job_id: str | None = None):
    job = Job(job_id or str(uuid.uuid4()), {"messages": [{"role": "user", "content": prompt}]}, CHAT, attempt)
    return job, runtime.pipeline.run(job)


def flights(runtime) -> list[str]:
    return list(runtime.store.client.scan_iter(f"{FLIGHT_PREFIX}*"))


def hold_state(runtime, job_id: str) -> str | None:
    return runtime.store.client.hget(JOB_PREFIX + job_id, "state")


def test_success_stores_the_answer_lands_the_flight_and_settles_the_hold(runtime, tag):
    job, outcome = run(runtime, f"{tag} a plain question")
    assert outcome.ending is Ending.SUCCEEDED
    assert flights(runtime) == [] and hold_state(runtime, job.id) == "settled"
    assert runtime.store.get(job.id).status is JobStatus.SUCCEEDED
    twin, again = run(runtime, f"{tag} a plain question")
    assert again.ending is Ending.CACHED and runtime.store.get(twin.id).cached
    assert hold_state(runtime, twin.id) is None  # a cached answer reserves nothing


def test_a_permanent_error_lands_the_flight_and_releases_the_hold(runtime, tag):
    job, outcome = run(runtime, f"{tag} bad [[sim:400]]")
    assert outcome.ending is Ending.FAILED and outcome.error.kind == "bad_request"
    assert flights(runtime) == [] and hold_state(runtime, job.id) == "released"
    assert runtime.store.get(job.id).status is JobStatus.FAILED


def test_a_retry_lands_the_flight_and_keeps_the_hold_for_its_next_attempt(runtime, tag):
    prompt = f"{tag} busy [[sim:429;times=1]]"
    job, outcome = run(runtime, prompt)
    assert outcome.ending is Ending.RETRY and outcome.not_before is not None
    assert flights(runtime) == [] and hold_state(runtime, job.id) == "reserved"
    assert runtime.store.get(job.id).status is JobStatus.RETRYING
    _, second = run(runtime, prompt, attempt=2, job_id=job.id)
    assert second.ending is Ending.SUCCEEDED and hold_state(runtime, job.id) == "settled"


def test_a_job_cancelled_while_it_waited_for_its_retry_releases_the_hold_and_calls_nothing(runtime, tag):
    prompt = f"{tag} busy then cancelled [[sim:429;times=1]]"
    job, outcome = run(runtime, prompt)
    assert outcome.ending is Ending.RETRY and hold_state(runtime, job.id) == "reserved"
    assert client.cancel(job.id)
    _, second = run(runtime, prompt, attempt=2, job_id=job.id)
    assert second.ending is Ending.SKIPPED
    assert flights(runtime) == [] and hold_state(runtime, job.id) == "released"
    assert runtime.store.get(job.id).status is JobStatus.CANCELLED


def test_a_job_finished_already_is_not_run_again(runtime, tag):
    job_id = str(uuid.uuid4())
    runtime.store.create(JobRecord(job_id=job_id, status=JobStatus.SUCCEEDED, text="done before"))
    _, outcome = run(runtime, f"{tag} delivered twice", job_id=job_id)
    assert outcome.ending is Ending.SKIPPED and flights(runtime) == []
    assert runtime.store.get(job_id).text == "done before"


@pytest.mark.parametrize("hook", ["before", "after"])
def test_a_stage_that_breaks_fails_its_job_and_every_other_stage_still_gives_back(runtime, tag, hook):
    stages = runtime.pipeline.stages
    runtime.pipeline = Pipeline([*stages[:-1], Broken(hook), stages[-1]], runtime.pipeline.call, runtime.store,
                                runtime.config, runtime.router)
    job, outcome = run(runtime, f"{tag} into a broken stage ({hook})")
    assert flights(runtime) == []
    if hook == "before":
        assert outcome.ending is Ending.FAILED and outcome.error.kind == "internal"
        assert "a stage broke before the call" in runtime.store.get(job.id).error["message"]
        assert hold_state(runtime, job.id) == "released"
    else:  # the call was made: its answer and cost are kept
        assert outcome.ending is Ending.SUCCEEDED and hold_state(runtime, job.id) == "settled"
        assert runtime.store.get(job.id).status is JobStatus.SUCCEEDED


def test_a_refused_budget_fails_the_job_and_lands_its_flight(redis_server, simulator, tag):
    data = yaml.safe_load(config_yaml(redis_server.url, simulator.url))
    config = validate({**data, "budgets": [{"name": "tiny", "period": "daily", "limit_usd": 0.000001}]})
    runtime = Runtime.build(config, calls_in_flight=2)
    try:
        job, outcome = run(runtime, f"{tag} too dear")
        assert outcome.ending is Ending.FAILED and outcome.error.kind == "budget_exceeded"
        assert flights(runtime) == [] and hold_state(runtime, job.id) is None
    finally:
        runtime.close()


def test_a_request_that_is_not_a_mapping_fails_its_job_with_a_record(runtime):
    job = Job(str(uuid.uuid4()), ["not", "a", "request"], CHAT)
    outcome = runtime.pipeline.run(job)
    assert outcome.ending is Ending.FAILED and outcome.error.kind == "invalid_job"
    assert runtime.store.get(job.id).status is JobStatus.FAILED


def test_a_bundled_job_that_cannot_be_sent_on_fails_and_gives_its_hold_back(runtime, tag):
    def broker_gone(job, outcome):
        raise ConnectionError("the broker is gone")

    job = Job(str(uuid.uuid4()), {"messages": [{"role": "user", "content": f"{tag} busy [[sim:429;times=1]]"}]}, CHAT)
    Bundle(runtime.pipeline, runtime.lanes, runtime.job_threads, broker_gone).run([job])
    record = runtime.store.get(job.id)
    assert record.status is JobStatus.FAILED and "the broker is gone" in record.error["message"]
    assert flights(runtime) == [] and hold_state(runtime, job.id) == "released"
