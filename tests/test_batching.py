"""Batch aggregation end to end: many producers, one Redis, real workers, the simulator over HTTP.

The test configuration serves gpt-3.5-turbo-instruct on the legacy completions
endpoint (batches of 16), gpt-4o with prompt packing (batches of 8),
text-embedding-3-small and gpt-4o-mini, which does not batch.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from flowcloud import client
from flowcloud.workers.lanes.queue import ALONE, JOIN, LEAD, MAILBOX_PREFIX, TAKE, BatchQueue, Entry, Window
from flowcloud.workers.lanes import local as local_lane
from flowcloud.workers.lanes.local import LocalLanes
from flowcloud.workers.lanes.packing import packed_messages, unpack_reply
from flowcloud.workers.core.errors import InvalidJob
from flowcloud.workers.core.redis_conn import connect
from flowcloud.simulator import answer_for, embedding_for

COMPLETIONS = "gpt-3.5-turbo-instruct"
PACKED = "gpt-4o"
EMBEDDING = "text-embedding-3-small"
# A wider window for tests that count calls of a few slow producers: a lane closes because it is
# full, not because two cores were busy elsewhere for 50 ms and a straggler went alone.
WIDE_WINDOW = {"FLOWCLOUD_BATCHING__FLUSH_MS": "500", "FLOWCLOUD_BATCHING__MAX_WAIT_MS": "500"}


def from_producers(producers: int, per_producer: int, submit) -> tuple[list[str], list[str]]:
    """Prompts submitted by ``producers`` threads at once; (prompts, job ids) in the same order."""
    start = threading.Barrier(producers)
    results: dict[int, list[tuple[str, str]]] = {}

    def produce(n: int) -> None:
        start.wait()
        results[n] = [(text, submit(text)) for text in (f"p{n} item {i}" for i in range(per_producer))]

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pairs = [pair for n in range(producers) for pair in results[n]]
    return [text for text, _ in pairs], [job_id for _, job_id in pairs]


def test_short_prompts_from_many_producers_share_few_calls(start_worker, simulator, tag):
    start_worker(env=WIDE_WINDOW)
    prompts, jobs = from_producers(8, 8, lambda text: client.submit(f"{tag} {text}", model=COMPLETIONS))
    records = client.wait_all(jobs, timeout=60)

    assert [r["status"] for r in records] == ["succeeded"] * 64, [r["error"] for r in records]
    assert [r["text"] for r in records] == [answer_for(f"{tag} {p}") for p in prompts]
    assert all(r["batch_size"] > 1 and r["model"] == COMPLETIONS and r["cost_usd"] > 0 for r in records)
    calls = simulator.requests_log(tag)
    assert len(calls) <= 6 and {c["path"] for c in calls} == {"/v1/completions"}
    assert {c["status"] for c in calls} == {200}
    again = client.status(client.submit(f"{tag} {prompts[0]}", model=COMPLETIONS))  # batched answers are cached
    assert again["cached"] is True and again["text"] == records[0]["text"]


def test_a_refused_prompt_fails_only_its_own_job(start_worker, simulator, tag):
    start_worker(env=WIDE_WINDOW)
    prompts = [f"{tag} fine {i}" for i in range(5)] + [f"{tag} refused [[sim:400]]"]
    records = client.wait_all(client.submit_many(prompts, model=COMPLETIONS), timeout=60)

    *fine, refused = records
    assert [r["status"] for r in fine] == ["succeeded"] * 5
    assert [r["text"] for r in fine] == [answer_for(p) for p in prompts[:5]]
    assert refused["status"] == "failed" and refused["error"]["kind"] == "bad_request"
    assert refused["attempts"] == 1 and refused["cost_usd"] == 0
    batched_refusals = [c for c in simulator.requests_log(tag) if c["status"] == 400 and "fine" in c["prompt"]]
    assert batched_refusals, "the refused prompt never shared a call with the others"


def test_a_retryable_batch_error_is_retried_by_every_member(start_worker, simulator, tag):
    start_worker(env=WIDE_WINDOW)
    prompts = [f"{tag} member {i}" for i in range(4)] + [f"{tag} member limited [[sim:429;times=1;retry-after=1]]"]
    records = client.wait_all(client.submit_many(prompts, model=COMPLETIONS), timeout=60)

    assert [r["status"] for r in records] == ["succeeded"] * 5
    assert [r["text"] for r in records] == [answer_for(p) for p in prompts]
    assert records[-1]["attempts"] == 2  # the job whose batch was limited, retried on its own count
    calls = simulator.requests_log(tag)
    assert [c["status"] for c in calls if "limited" in c["prompt"]] == [429, 200]


def test_embeddings_from_many_producers_are_batched(worker, simulator, tag):
    texts, jobs = from_producers(4, 8, lambda text: client.embed(f"{tag} {text}"))
    records = client.wait_all(jobs, timeout=60)

    assert [r["status"] for r in records] == ["succeeded"] * 32
    assert [r["embedding"] for r in records] == [pytest.approx(embedding_for(f"{tag} {t}")) for t in texts]
    assert all(r["text"] is None and r["model"] == EMBEDDING for r in records)
    calls = simulator.requests_log(tag)
    assert {c["path"] for c in calls} == {"/v1/embeddings"}
    assert len(calls) < len(texts) and max(r["batch_size"] for r in records) > 1


def test_embed_takes_a_list_and_checks_the_model_kind(worker, tag):
    jobs = client.embed([f"{tag} one", f"{tag} two"])
    assert [r["embedding"] for r in client.wait_all(jobs, timeout=30)] == [
        pytest.approx(embedding_for(f"{tag} one")), pytest.approx(embedding_for(f"{tag} two"))]
    with pytest.raises(InvalidJob, match="'gpt-4o-mini' is a chat model; send its jobs with client.submit"):
        client.embed("hello", model="gpt-4o-mini")
    with pytest.raises(InvalidJob, match="is an embedding model; send its jobs with client.embed"):
        client.submit("hello", model=EMBEDDING)
    with pytest.raises(InvalidJob, match="empty"):
        client.embed([f"{tag} fine", "  "])  # nothing queued for the fine one either


def test_packed_prompts_get_their_own_answers_in_fewer_calls(start_worker, simulator, tag):
    start_worker(env=WIDE_WINDOW)
    prompts = [f"{tag} packed question {i}" for i in range(8)]
    records = client.wait_all(client.submit_many(prompts, model=PACKED), timeout=60)

    assert [r["status"] for r in records] == ["succeeded"] * 8
    assert [r["text"] for r in records] == [answer_for(p) for p in prompts]
    calls = simulator.requests_log(tag)
    assert len(calls) < len(prompts) and {c["path"] for c in calls} == {"/v1/chat/completions"}
    assert any(r["batch_size"] > 1 for r in records)


def test_an_unparseable_packed_reply_falls_back_to_single_calls(start_worker, simulator, tag):
    start_worker(env=WIDE_WINDOW)
    prompts = [f"{tag} pack {i}" for i in range(3)] + [f"{tag} pack garbled [[sim:garbage]]"]
    records = client.wait_all(client.submit_many(prompts, model=PACKED), timeout=60)

    assert [r["status"] for r in records] == ["succeeded"] * 4
    assert [r["text"] for r in records] == [answer_for(p) for p in prompts]
    assert records[-1]["batch_size"] == 1  # answered by a call of its own
    packed = [c for c in simulator.requests_log(tag) if c["prompt"].startswith("[")]
    assert packed, "the garbled prompt never shared a packed call"


def test_models_that_do_not_batch_never_touch_the_batch_lanes(worker, redis_server, tag):
    def blocking_pops() -> int:
        return int(redis_server.client().info("commandstats").get("cmdstat_blpop", {}).get("calls", 0))

    before = blocking_pops()
    record = client.result(client.submit(f"{tag} plain chat"), timeout=30)
    assert record["status"] == "succeeded" and record["batch_size"] is None
    assert blocking_pops() == before
    assert not redis_server.client().keys("flowcloud:batch*")


def test_a_cancelled_job_leaves_its_batch_without_a_call(start_worker, simulator, tag):
    worker = start_worker(env={"FLOWCLOUD_BATCHING__FLUSH_MS": "2000", "FLOWCLOUD_BATCHING__MAX_WAIT_MS": "2000"})
    job = client.submit(f"{tag} soon cancelled", model=COMPLETIONS)
    deadline = time.monotonic() + 20
    while client.status(job)["status"] != "running":  # then it waits in its lane for others to join
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    assert client.cancel(job)
    while f"[{job}] succeeded" not in worker.log():  # the task ends once its lane is flushed
        assert time.monotonic() < deadline, worker.log()[-2000:]
        time.sleep(0.1)
    assert client.status(job)["status"] == "cancelled"
    assert simulator.requests_log(tag) == []


# -- the lane protocol on its own, against the private Redis


def lane(name: str, flush_ms: int = 50, max_size: int = 4) -> Window:
    return Window(f"test:{name}", max_size, flush_ms, call_seconds=0.2)


def echo(calls: list[list[str]]):
    def run(entries: list[Entry]) -> list[dict]:
        calls.append([entry.text for entry in entries])
        return [{"kind": "answer", "value": entry.text.upper()} for entry in entries]
    return run


def test_concurrent_members_share_one_run_and_each_gets_its_own_outcome(redis_server, tag):
    queue, calls, outcomes = BatchQueue(connect(redis_server.url)), [], {}
    window = lane(tag, flush_ms=2000, max_size=3)  # full long before the window closes

    def member(n: int) -> None:
        outcomes[n] = queue.await_outcome(window, f"job-{n}", f"text {n}", echo(calls))

    threads = [threading.Thread(target=member, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and sorted(calls[0]) == ["text 0", "text 1", "text 2"]
    assert outcomes == {n: {"kind": "answer", "value": f"TEXT {n}"} for n in range(3)}


def test_an_entry_outlives_a_flusher_that_died_before_taking_it(redis_server, tag):
    client_ = connect(redis_server.url)
    window = lane(tag)
    client_.set(window.lock_key, "a flusher that died", px=300)
    calls: list[list[str]] = []
    outcome = BatchQueue(client_).await_outcome(window, "job", "left behind", echo(calls))
    assert outcome == {"kind": "answer", "value": "LEFT BEHIND"} and calls == [["left behind"]]


def test_a_flush_that_leaves_entries_hands_the_lane_to_the_oldest_at_once(redis_server, tag):
    client_ = connect(redis_server.url)
    window = lane(tag, flush_ms=10_000, max_size=4)  # nobody would wake up to lead for 10 s
    join, take = client_.register_script(JOIN), client_.register_script(TAKE)
    replies = [f"reply-{i}" for i in range(6)]
    for i, reply in enumerate(replies):
        join(keys=[window.list_key, window.lock_key],
             args=[json.dumps({"job": f"j{i}", "text": f"t{i}", "reply": reply}), reply, 60_000, 60_000])
    assert client_.get(window.lock_key) == "reply-0"  # the first to join leads

    code, *items = take(keys=[window.list_key, window.lock_key],
                        args=["reply-0", window.max_size, window.flush_ms, window.longest_ms, MAILBOX_PREFIX,
                              60_000, 60_000, json.dumps(LEAD)])
    assert code == 2 and [Entry.from_item(item).reply for item in items] == replies[:4]
    assert client_.get(window.lock_key) == "reply-4"
    assert client_.lrange(MAILBOX_PREFIX + "reply-4", 0, -1) == [json.dumps(LEAD)]
    assert not client_.exists(MAILBOX_PREFIX + "reply-5")

    code, *items = take(keys=[window.list_key, window.lock_key],
                        args=["reply-4", window.max_size, 0, 0, MAILBOX_PREFIX, 60_000, 60_000, json.dumps(LEAD)])
    assert [Entry.from_item(item).reply for item in items] == replies[4:]
    assert not client_.exists(window.lock_key)  # nothing left: the lane is free


def test_a_member_whose_flusher_died_mid_call_goes_alone(redis_server, tag):
    client_ = connect(redis_server.url)
    window = lane(tag)
    client_.set(window.lock_key, "doomed", px=60_000)
    outcome: dict = {}
    member = threading.Thread(target=lambda: outcome.update(
        BatchQueue(client_).await_outcome(window, "job", "stranded", echo([]))))
    member.start()
    take = client_.register_script(TAKE)
    while not client_.llen(window.list_key):
        time.sleep(0.01)
    while True:  # the doomed flusher takes the entry, says so, then never answers
        code, *items = take(keys=[window.list_key, window.lock_key], args=["doomed", window.max_size, 1, 1])
        if code == 2:
            break
        time.sleep(0.01)
    reply = Entry.from_item(items[0]).reply
    client_.rpush(f"flowcloud:batch-reply:{reply}", json.dumps({"kind": "taken"}))
    member.join(30)
    assert outcome == ALONE


# -- the packing format


def test_a_packed_reply_is_accepted_only_as_the_list_asked_for():
    assert json.loads(packed_messages(["a", "b"])[1]["content"]) == ["a", "b"]
    assert unpack_reply('["x", "y"]', 2) == ["x", "y"]
    assert unpack_reply('```json\n["x", "y"]\n```', 2) == ["x", "y"]
    for reply in ('["x"]', '["x", 2]', '{"a": "x"}', "Sure! 1. x 2. y", '["x", "y"'):
        assert unpack_reply(reply, 2) is None, reply


# -- a worker process's own lane


def test_jobs_of_one_process_make_a_full_batch_without_redis(monkeypatch):
    monkeypatch.setattr(local_lane, "LOCAL_WAIT_SECONDS", 30.0)  # however slowly this machine starts threads
    lanes, window = LocalLanes(), lane("local", max_size=8)
    calls: list[list[str]] = []
    outcomes: dict[str, dict | None] = {}
    members = [threading.Thread(target=lambda i=i: outcomes.update(
        {f"t{i}": lanes.outcome(window, f"j{i}", f"t{i}", echo(calls))})) for i in range(8)]
    for member in members:
        member.start()
    for member in members:
        member.join(10)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(outcomes)
    assert all(outcome == {"kind": "answer", "value": text.upper()} for text, outcome in outcomes.items())
    # A job with nobody to batch with goes on to Redis, unanswered.
    monkeypatch.setattr(local_lane, "LOCAL_WAIT_SECONDS", 0.01)
    assert lanes.outcome(window, "lone", "lone", echo(calls)) is None and len(calls) == 1


def test_a_local_batch_whose_call_breaks_sends_the_others_alone(monkeypatch):
    monkeypatch.setattr(local_lane, "LOCAL_WAIT_SECONDS", 30.0)
    lanes, window = LocalLanes(), lane("broken", max_size=3)

    def broken(entries):
        raise RuntimeError("the call broke")

    outcomes: list[dict | None] = []
    others = [threading.Thread(target=lambda i=i: outcomes.append(lanes.outcome(window, f"j{i}", f"t{i}", broken)))
              for i in range(2)]
    for other in others:
        other.start()
    while len(lanes._waiting.get(window.key, [])) < 2:
        time.sleep(0.001)
    with pytest.raises(RuntimeError, match="the call broke"):
        lanes.outcome(window, "caller", "t", broken)
    for other in others:
        other.join(10)
    assert outcomes == [ALONE, ALONE]
