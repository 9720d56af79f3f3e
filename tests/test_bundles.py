"""submit_many's bundles: many jobs in one message, each still its own job, through real workers."""

import json

import pytest

from flowcloud import client
from flowcloud.workers.core.records import JobStore
from tests.conftest import wait_until_running
from flowcloud.workers.core.config import get_config, use_config
from flowcloud.simulator import answer_for

# Named here: importing flowcloud.workers.core.celery_app would read the configuration before the tests point it.
BUNDLE_TASK, COMPLETE_TASK, DEFAULT_QUEUE = "flowcloud.bundle", "flowcloud.complete", "flowcloud"
BUNDLE_SIZE = 20  # worker.bundle_size's default, which the tests' configuration keeps


def queued_messages(redis_server) -> list[dict]:
    return [json.loads(raw) for raw in redis_server.client().lrange(DEFAULT_QUEUE, 0, -1)]


def test_jobs_travel_in_bundles_yet_each_answers_fails_and_retries_alone(start_worker, redis_server, simulator,
                                                                        tag):
    assert get_config().worker.bundle_size == BUNDLE_SIZE
    prompts = [f"{tag} bundled {i}" for i in range(2 * BUNDLE_SIZE + 5)]
    prompts[3] = f"{tag} bad [[sim:400]]"
    prompts[7] = f"{tag} busy [[sim:429;times=1;retry-after=1]]"
    ids = client.submit_many(prompts)

    messages = queued_messages(redis_server)  # no worker yet: what the client sent is still queued
    assert [m["headers"]["task"] for m in messages] == [BUNDLE_TASK] * 3
    assert all(m["headers"]["argsrepr"].startswith("[") for m in messages)  # a preview, never the prompts
    assert sorted(m["headers"]["argsrepr"].split("]")[0] for m in messages) == ["[20 jobs", "[20 jobs", "[5 jobs"]
    assert [client.status(job_id)["status"] for job_id in ids] == ["queued"] * len(ids)

    worker = start_worker(concurrency=20)
    records = client.wait_all(ids, timeout=60)
    for i, (prompt, record) in enumerate(zip(prompts, records)):
        if i == 3:
            assert record["status"] == "failed" and record["error"]["kind"] == "bad_request"
            assert record["attempts"] == 1
            continue
        assert record["status"] == "succeeded", record
        assert record["text"] == answer_for(prompt) and record["worker"] == worker.hostname
    assert records[7]["attempts"] == 2
    # Its second attempt ran as a task of its own, under its job id.
    assert f"{COMPLETE_TASK}[{ids[7]}]" in worker.log()
    assert [c["status"] for c in simulator.requests_log(f"{tag} busy")] == [429, 200]


def test_a_cancelled_job_in_a_bundle_never_reaches_the_provider(broker, start_worker, simulator, tag):
    ids = client.submit_many([f"{tag} keep {i}" for i in range(5)] + [f"{tag} drop"])
    assert client.cancel(ids[-1]) is True
    start_worker()
    records = client.wait_all(ids, timeout=30)
    assert [r["status"] for r in records] == ["succeeded"] * 5 + ["cancelled"]
    assert simulator.requests_log(f"{tag} drop") == []


def test_a_bundle_on_a_killed_worker_comes_back_and_bills_each_job_once(broker, start_worker, tag):
    env = {"FLOWCLOUD_WORKER__VISIBILITY_TIMEOUT": "5"}
    doomed = start_worker(concurrency=4, env=env)
    ids = client.submit_many([f"{tag} job {i} [[sim:slow;delay=1]]" for i in range(BUNDLE_SIZE)])
    wait_until_running(ids, 4)
    doomed.kill()

    start_worker(concurrency=20, env=env)
    records = client.wait_all(ids, timeout=60)
    assert [r["status"] for r in records] == ["succeeded"] * len(ids), records
    assert JobStore.open(get_config()).spent_usd() == pytest.approx(sum(r["cost_usd"] for r in records))


def test_one_message_per_job_when_bundles_are_off(redis_server, tag):
    config = get_config()
    unbundled = config.model_copy(update={"worker": config.worker.model_copy(update={"bundle_size": 1})})
    replaced = use_config(unbundled)
    try:
        ids = client.submit_many([f"{tag} alone {i}" for i in range(3)])
    finally:
        use_config(replaced)
    messages = queued_messages(redis_server)
    assert [m["headers"]["task"] for m in messages] == [COMPLETE_TASK] * 3
    assert sorted(m["headers"]["id"] for m in messages) == sorted(ids)


COMPLETIONS = "gpt-3.5-turbo-instruct"  # batches 16 prompts a call in the tests' configuration


def test_a_full_batch_in_a_bundle_is_one_call_and_each_job_its_own_answer(worker, simulator, tag):
    prompts = [f"{tag} together {i}" for i in range(16)]
    records = client.wait_all(client.submit_many(prompts, model=COMPLETIONS), timeout=60)
    assert [r["status"] for r in records] == ["succeeded"] * 16
    assert [r["text"] for r in records] == [answer_for(p) for p in prompts]
    assert {r["batch_size"] for r in records} == {16}
    assert len(simulator.requests_log(tag)) == 1


def test_a_refused_prompt_in_a_bundle_batch_fails_alone(worker, simulator, tag):
    prompts = [f"{tag} fine {i}" for i in range(15)] + [f"{tag} refused [[sim:400]]"]
    *fine, refused = client.wait_all(client.submit_many(prompts, model=COMPLETIONS), timeout=60)
    assert [r["status"] for r in fine] == ["succeeded"] * 15
    assert [r["text"] for r in fine] == [answer_for(p) for p in prompts[:15]]
    assert refused["status"] == "failed" and refused["error"]["kind"] == "bad_request"
    assert [c["status"] for c in simulator.requests_log(tag)].count(400) == 2  # the batch, then it alone


def test_a_limited_bundle_batch_is_retried_by_every_member(broker, worker, simulator, tag):
    prompts = [f"{tag} member {i}" for i in range(15)] + [f"{tag} limited [[sim:429;times=1;retry-after=1]]"]
    records = client.wait_all(client.submit_many(prompts, model=COMPLETIONS), timeout=60)
    assert [r["status"] for r in records] == ["succeeded"] * 16
    assert [r["text"] for r in records] == [answer_for(p) for p in prompts]
    assert {r["attempts"] for r in records} == {2}
