"""Batch API runs end to end: the engine and adapter against the simulator's batch endpoints and real Redis.

Runs are driven by ``advance`` calls from this process and by a real worker
executing the poll task. Expected summaries are computed from the simulator's
deterministic answers, so every text, token and dollar is checked exactly.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
import requests

from flowcloud.workers.batch_runs.plan import DocumentProgress, PlannedRequest, next_level, plan_documents, retry_or_fail
from flowcloud.workers.core.chunking import (
    clean_text, estimate_tokens, map_prompt, reduce_groups, reduce_prompt, split_into_chunks,
)
from tests.conftest import KEY_ENV
from flowcloud.workers.core.config import SummarizeSettings, get_config
from flowcloud.workers.core.errors import AuthenticationFailed, InvalidJob, MalformedResponse, NotFound, RateLimited, ServerError
from flowcloud.simulator.answers import answer_for, count_tokens

ROUND_DELAY = 0.3


@pytest.fixture
def canary() -> str:
    """The key the workers and the simulator were given for this test run, read from the environment."""
    key = os.environ[KEY_ENV]
    assert key.startswith("sk-canary-")
    return key


@pytest.fixture
def engine(simulator):
    """flowcloud.workers.batch_runs.run, imported once the fixtures point the configuration at the test Redis and simulator,
    with the simulator's batches made quick for this test. Its runs plan chunks (``strategy: fastest``),
    since rounds and reduce levels are what these tests follow; the cheapest plan has its own test."""
    from flowcloud.workers import runtime
    from flowcloud.workers.batch_runs import run as batch_api

    config = get_config()
    chunked = config.model_copy(update={"summarize": config.summarize.model_copy(update={"strategy": "fastest"})})
    replaced = runtime.install(runtime.Runtime.build(chunked))
    config_url = f"{simulator.root}/_sim/config"
    before = requests.get(config_url, timeout=10).json()
    requests.post(config_url, json={"batch_delay": ROUND_DELAY, "batch_window": 86400}, timeout=10)
    yield batch_api
    requests.post(config_url, json={k: before[k] for k in ("batch_delay", "batch_window")}, timeout=10)
    runtime.install(replaced).close()


def paragraphs(tag: str, count: int, words: int = 400) -> str:
    return "\n\n".join(f"{tag} section {n}. " + " ".join(f"word{i % 89}" for i in range(words)) + "."
                       for n in range(count))


def expected(text: str, settings: SummarizeSettings) -> tuple[str, int, int, int]:
    """The summary the simulator's answers make of ``text``, its prompt and completion tokens, its rounds."""
    chunks = split_into_chunks(clean_text(text), settings.chunk_tokens, settings.overlap_tokens)
    prompts = [map_prompt(chunk) for chunk in chunks]
    texts, prompt_tokens, completion_tokens, rounds = [], 0, 0, 0
    while True:
        rounds += 1
        texts = [answer_for(prompt) for prompt in prompts]
        prompt_tokens += sum(count_tokens(p) for p in prompts)
        completion_tokens += sum(count_tokens(t) for t in texts)
        if len(texts) == 1:
            return texts[0], prompt_tokens, completion_tokens, rounds
        prompts = [reduce_prompt(group) for group in reduce_groups(texts, settings.reduce_tokens)]


def drive(engine, run_id: str, timeout: float = 60):
    """Call ``advance`` until the run finishes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = engine.advance(run_id)
        if state.finished:
            return state
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} not finished: {engine.run_state(run_id)}")


def batches_created(simulator) -> int:
    return simulator.stats()["by_endpoint"].get("/v1/batches", {}).get("200", 0)


def three_documents(tag: str) -> dict[str, str]:
    return {"short.txt": f"{tag} a short note about queues.",
            "memo.txt": paragraphs(f"{tag} memo", 2, words=60),
            "long.txt": paragraphs(f"{tag} long", 8)}


def test_three_documents_are_summarized_in_rounds_at_half_the_list_price(engine, simulator, tag):
    documents = three_documents(tag)
    settings = get_config().summarize
    sent_before = batches_created(simulator)

    engine.start(f"run-{tag}", [engine.BatchDocument(n, t) for n, t in documents.items()], "gpt-4o-mini", "reports")
    assert engine.open_runs() == [f"run-{tag}"]
    state = drive(engine, f"run-{tag}")

    plans = {name: expected(text, settings) for name, text in documents.items()}
    assert plans["long.txt"][3] == 2 and plans["short.txt"][3] == 1  # the long one needs a reduce round
    assert state.finished and state.round == 2 and state.documents == 3
    assert batches_created(simulator) - sent_before == 2  # one batch per round, all documents together
    assert engine.open_runs() == []
    for name, (text, prompt_tokens, completion_tokens, _) in plans.items():
        summary = state.results[name]
        assert summary.error is None and summary.text == text
        assert summary.usage == {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        assert summary.list_price_usd == pytest.approx((prompt_tokens * 0.15 + completion_tokens * 0.60) / 1e6)
        assert summary.cost_usd == pytest.approx(0.5 * summary.list_price_usd) and summary.cost_usd > 0
    assert state.cost_usd == pytest.approx(0.5 * state.list_price_usd)
    assert engine.advance(f"run-{tag}") == state  # a finished run stays as it is


def test_a_failing_request_fails_only_its_document_and_a_retryable_one_gets_one_more_round(engine, tag):
    documents = {
        "fine": f"{tag} nothing wrong here.",
        "rejected": f"{tag} this one is refused [[sim:400]].",
        "flaky": f"{tag} fails once [[sim:503;times=1]].",
        "broken": f"{tag} always fails [[sim:500]].",
    }
    engine.start(f"run-{tag}", [engine.BatchDocument(n, t) for n, t in documents.items()], "gpt-4o-mini", None)
    state = drive(engine, f"run-{tag}")

    results = state.results
    assert results["fine"].error is None and results["fine"].text == answer_for(map_prompt(documents["fine"]))
    assert results["flaky"].error is None and results["flaky"].text == answer_for(map_prompt(documents["flaky"]))
    assert results["rejected"].text is None and "400" in results["rejected"].error
    assert "attempts" not in results["rejected"].error  # a permanent error is not tried again
    assert results["broken"].text is None and "500" in results["broken"].error
    assert "after 2 attempts" in results["broken"].error
    assert results["rejected"].cost_usd == 0 and results["fine"].cost_usd > 0
    assert state.round == 2


def test_a_worker_running_the_poll_task_finishes_the_run(engine, start_worker, tag, canary):
    from flowcloud.workers.core.celery_app import POLL_BATCHES_TASK, app

    worker = start_worker()
    documents = three_documents(tag)
    engine.start(f"run-{tag}", [engine.BatchDocument(n, t) for n, t in documents.items()], None, None)
    deadline = time.monotonic() + 60
    while not engine.run_state(f"run-{tag}").finished:
        assert time.monotonic() < deadline, engine.run_state(f"run-{tag}")
        app.send_task(POLL_BATCHES_TASK)
        time.sleep(0.3)

    state = engine.run_state(f"run-{tag}")
    settings = get_config().summarize
    assert {name: s.text for name, s in state.results.items()} == {
        name: expected(text, settings)[0] for name, text in documents.items()}
    assert "flowcloud.poll_batches" in worker.log() and canary not in worker.log()


def test_concurrent_advances_send_each_round_once(engine, simulator, tag):
    sent_before = batches_created(simulator)
    engine.start(f"run-{tag}", [engine.BatchDocument("long", paragraphs(tag, 8))], "gpt-4o-mini", None)
    states = []
    deadline = time.monotonic() + 60
    while not any(s.finished for s in states):
        assert time.monotonic() < deadline
        threads = [threading.Thread(target=lambda: states.append(engine.advance(f"run-{tag}"))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.05)
    assert batches_created(simulator) - sent_before == 2
    assert engine.run_state(f"run-{tag}").results["long"].error is None


def test_start_twice_sends_one_batch_and_state_holds_no_key(engine, simulator, tag, redis_server, canary):
    sent_before = batches_created(simulator)
    documents = [engine.BatchDocument("doc", f"{tag} some text to summarize.")]
    engine.start(f"run-{tag}", documents, "gpt-4o-mini", None)
    engine.start(f"run-{tag}", documents, "gpt-4o-mini", None)
    assert batches_created(simulator) - sent_before == 1

    client = redis_server.client()
    batch_id = engine.run_state(f"run-{tag}").batch_id
    batch = requests.get(f"{simulator.url}/batches/{batch_id}", timeout=10,
                         headers={"Authorization": f"Bearer {canary}"}).json()
    uploaded = requests.get(f"{simulator.url}/files/{batch['input_file_id']}/content", timeout=10,
                            headers={"Authorization": f"Bearer {canary}"}).text
    assert tag in uploaded and canary not in uploaded
    drive(engine, f"run-{tag}")
    stored = everything_in(client)
    assert f"run-{tag}".encode() in stored and tag.encode() in stored and canary.encode() not in stored


def everything_in(client) -> bytes:
    """Every key and value in Redis, as one byte string to search."""
    read = {b"string": lambda k: [client.get(k)], b"hash": lambda k: list(client.hgetall(k).items()),
            b"list": lambda k: client.lrange(k, 0, -1), b"set": client.smembers,
            b"zset": lambda k: client.zrange(k, 0, -1)}
    parts = []
    for key in client.keys("*"):
        reader = read.get(client.type(key))
        parts += [key, repr(reader(key) if reader else None).encode()]
    return b" ".join(parts)


def test_bad_input_is_refused_before_anything_is_stored(engine, tag):
    doc = engine.BatchDocument
    for documents, model, reason in [
        ([], "gpt-4o-mini", "at least one document"),
        ([doc("a", "x"), doc("a", "y")], "gpt-4o-mini", "repeated: a"),
        ([doc("a", "x")], "no-such-model", "no provider serves"),
        ([doc("a", None)], "gpt-4o-mini", "text as a string"),
    ]:
        with pytest.raises(InvalidJob, match=reason):
            engine.start(f"run-{tag}", documents, model, None)
    assert engine.open_runs() == []
    with pytest.raises(Exception, match="no job"):
        engine.advance(f"run-{tag}")


def test_an_empty_document_fails_alone(engine, tag):
    engine.start(f"run-{tag}", [engine.BatchDocument("blank", " \n\n "), engine.BatchDocument("ok", f"{tag} fine")],
                 "gpt-4o-mini", None)
    state = drive(engine, f"run-{tag}")
    assert "no text" in state.results["blank"].error and state.results["ok"].error is None


def test_expired_requests_are_retried_once_then_fail_their_document(engine, simulator, tag):
    requests.post(f"{simulator.root}/_sim/config", json={"batch_delay": 0.4, "batch_window": 0}, timeout=10)
    engine.start(f"run-{tag}", [engine.BatchDocument("late", f"{tag} never in time")], "gpt-4o-mini", None)
    state = drive(engine, f"run-{tag}")
    assert state.round == 2 and "batch_expired" in state.results["late"].error


def test_provider_errors_on_the_batch_calls_are_classified(engine, simulator, tag):
    from flowcloud.workers import runtime

    api = runtime.current().router.route("gpt-4o-mini")[0].batch_api()
    with pytest.raises(NotFound):
        api.get("batch_" + uuid.uuid4().hex)
    with pytest.raises(AuthenticationFailed, match="api_key_env"):
        runtime.current().router.route("needs-other-key")[0].batch_api().upload([{"custom_id": "a"}])
    ok = {"status_code": 200, "body": {"choices": [{"message": {"content": "hi"}}], "usage": {}}}
    assert api.read_result({"custom_id": "a", "response": ok}).completion.text == "hi"
    limited = api.read_result({"custom_id": "b", "response": {"status_code": 429, "body": {"error": {}}}})
    assert isinstance(limited.error, RateLimited) and limited.error.retryable
    for garbage in [{"status_code": 200, "body": {"choices": "x"}}, {"status_code": "200"}, None]:
        result = api.read_result({"custom_id": "c", "response": garbage})
        assert isinstance(result.error, MalformedResponse), garbage
    dropped = api.read_result({"custom_id": "d", "response": None, "error": {"code": "server_error"}})
    assert isinstance(dropped.error, ServerError)
    assert api.read_result({"response": ok}) is None


def test_reduce_levels_follow_the_chunking_rules():
    settings = SummarizeSettings(chunk_tokens=100, overlap_tokens=10, reduce_tokens=200)
    text = "\n\n".join(f"Paragraph {i}. " + "lorem ipsum dolor sit amet " * 12 for i in range(40))
    documents, requests_ = plan_documents([("big", text)], settings)
    chunks = split_into_chunks(clean_text(text), 100, 10)
    assert len(requests_) == len(chunks) == documents[0].chunks and len(chunks) > 20
    document, level_sizes = documents[0], []
    while document.summary is None:
        pending = [r for r in requests_ if r.level == document.level]
        for request in pending:
            document.texts[request.part] = "s" * 300  # summaries big enough to need several levels
        requests_ = next_level(0, document, settings)
        level_sizes.append(len(requests_))
    assert level_sizes[0] > 1 and level_sizes[-1] == 0 and level_sizes[-2] == 1
    assert all(a > b for a, b in zip(level_sizes, level_sizes[1:]))


def test_the_cheapest_plan_sends_a_document_that_fits_the_window_as_one_request():
    settings = SummarizeSettings()  # strategy: cheapest
    text = "\n\n".join(f"Paragraph {i}. " + "lorem ipsum dolor sit amet " * 12 for i in range(40))
    documents, requests_ = plan_documents([("fits", text)], settings, context_tokens=128_000)
    assert [r.prompt for r in requests_] == [map_prompt(clean_text(text))] and documents[0].chunks == 1
    small_window = estimate_tokens(map_prompt(clean_text(text))) + settings.summary_tokens  # 4 tokens short
    documents, requests_ = plan_documents([("too big", text)], settings, context_tokens=small_window)
    assert len(requests_) == documents[0].chunks > 1
    fastest = SummarizeSettings(strategy="fastest")
    assert len(plan_documents([("fits", text)], fastest, context_tokens=128_000)[1]) > 1


def test_only_retryable_errors_get_a_second_round():
    request = PlannedRequest(doc=0, level=0, part=0, prompt="p")
    document = DocumentProgress(name="d", texts=[None])
    retry = retry_or_fail(document, request, ServerError("down", provider="p"))
    assert retry is not None and retry.attempt == 2 and not document.finished
    assert retry_or_fail(document, retry, ServerError("down", provider="p")) is None
    assert document.error == "down after 2 attempts"
    other = DocumentProgress(name="e", texts=[None])
    assert retry_or_fail(other, request, AuthenticationFailed("no", provider="p")) is None and other.error == "no"
