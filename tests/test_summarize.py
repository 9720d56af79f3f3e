"""Summaries end to end: a real worker plans, cuts, fans out and reduces through the simulator over HTTP.

The simulator's answers are a pure function of the prompt, so each test replays
the plan (the same planning and chunking functions, the simulator's
``answer_for``) to know the exact summary, calls, tokens and cost the worker
must produce. The tests whose point is the chunks run their worker with
``summarize.strategy: fastest``: with the default, a text that fits the
model's window is one call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from flowcloud import client
from flowcloud.workers.core.chunking import clean_text, map_prompt, reduce_groups, reduce_prompt, split_into_chunks
from flowcloud.workers.core.jobspec import build_summarize_spec
from flowcloud.workers.core.records import JobStore
from flowcloud.workers.core.config import SummarizeSettings, get_config, load_config
from flowcloud.workers.core.errors import InvalidJob
from flowcloud.workers.core.summary_plan import direct_call, plan_summary
from flowcloud.simulator.answers import answer_for, count_tokens, truncate_to_tokens

# gpt-4o-mini in the test configuration, USD per million tokens
INPUT_PRICE, OUTPUT_PRICE = 0.15, 0.60
FASTEST = {"FLOWCLOUD_SUMMARIZE__STRATEGY": "fastest"}
WORDS = "queue worker broker retry chunk summary provider latency budget token cache flight".split()


def document(tag: str, chars: int, marks: dict[int, str] | None = None) -> str:
    """A text of about ``chars`` characters whose every sentence starts with ``tag``, so each
    chunk's call shows up in the simulator's log (it keeps a prompt's first 200 characters).
    ``marks`` appends a fault directive to the paragraph of that number."""
    paragraphs, size, number = [], 0, 0
    while size < chars:
        sentences = [f"{tag} p{number}s{i} " + " ".join(WORDS[(number * 7 + i * 3 + k) % len(WORDS)]
                                                         for k in range(5)) + "." for i in range(8)]
        paragraph = " ".join(sentences) + (f" {marks[number]}" if marks and number in marks else "")
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
        number += 1
    return "\n\n".join(paragraphs)


@dataclass
class Plan:
    """What the worker must do for a text: every call's prompt and answer, level by level."""

    chunks: list[str]
    levels: list[list[tuple[str, str]]] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return self.levels[-1][0][1]

    @property
    def depth(self) -> int:
        return len(self.levels) - 1

    def usage(self) -> dict[str, int]:
        calls = [call for level in self.levels for call in level]
        return {"prompt_tokens": sum(count_tokens(p) for p, _ in calls),
                "completion_tokens": sum(count_tokens(a) for _, a in calls)}

    def cost(self) -> float:
        usage = self.usage()
        return (usage["prompt_tokens"] * INPUT_PRICE + usage["completion_tokens"] * OUTPUT_PRICE) / 1e6


def replay(text: str, settings: SummarizeSettings, max_tokens: int | None = None, strategy: str = "fastest") -> Plan:
    entry = get_config().model("gpt-4o-mini")
    plan = Plan(list(plan_summary(text, entry, settings, strategy, max_tokens).chunks))
    prompts = [map_prompt(chunk) for chunk in plan.chunks]
    while True:
        limit = (max_tokens or settings.summary_tokens) if len(prompts) == 1 else settings.summary_tokens
        plan.levels.append([(p, truncate_to_tokens(answer_for(p), limit)[0]) for p in prompts])
        if len(prompts) == 1:
            return plan
        groups = reduce_groups([answer for _, answer in plan.levels[-1]], settings.reduce_tokens)
        prompts = [reduce_prompt(group) for group in groups]


@pytest.fixture
def fastest_worker(start_worker):
    return start_worker(env=FASTEST)


def store() -> JobStore:
    return JobStore.open(get_config())


def watch(job_id: str, timeout: float = 60) -> tuple[dict, list[dict]]:
    """The finished record and every distinct progress seen while the job ran."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.status(job_id)
        if record["status"] in ("succeeded", "failed", "cancelled"):
            return record, seen
        if record["progress"] and (not seen or seen[-1] != record["progress"]):
            seen.append(record["progress"])
        time.sleep(0.02)
    raise AssertionError(f"summary {job_id} still {record['status']} after {timeout} s")


def test_a_long_text_is_summarized_through_chunks_with_progress(fastest_worker, simulator, tag):
    # One slow chunk keeps the map level open for a second, long enough to see it half done.
    text = document(tag, 200_000, marks={120: "[[sim:slow;delay=1]]"})
    plan = replay(text, get_config().summarize)
    assert len(text) >= 200_000 and len(plan.chunks) > 10 and plan.depth == 1

    record, seen = watch(client.summarize(text, flow="reports"))

    assert record["status"] == "succeeded", record["error"]
    assert record["text"] == plan.summary
    chunks = len(plan.chunks)
    assert record["progress"] == {"chunks_done": chunks, "chunks_total": chunks, "depth": 1}
    assert any(0 < p["chunks_done"] < p["chunks_total"] == chunks for p in seen), seen
    map_progress = [p["chunks_done"] for p in seen if p["depth"] == 0]
    assert map_progress == sorted(map_progress)  # it only rises
    assert len(simulator.requests_log(tag)) == chunks  # one call per chunk, all in the log by the tag
    assert record["usage"] == plan.usage() and record["attempts"] == chunks + 1
    assert record["cost_usd"] == pytest.approx(plan.cost(), rel=1e-9)
    assert (record["provider"], record["model"], record["flow"]) == ("sim", "gpt-4o-mini", "reports")
    assert store().spent_usd() == pytest.approx(record["cost_usd"], abs=1e-9)  # billed once, by the children


def test_summaries_too_long_for_one_reduce_make_a_tree(start_worker, simulator, monkeypatch, tag):
    monkeypatch.setenv("FLOWCLOUD_SUMMARIZE__REDUCE_TOKENS", "200")
    start_worker(env={"FLOWCLOUD_SUMMARIZE__REDUCE_TOKENS": "200", **FASTEST})
    text = document(tag, 120_000)
    plan = replay(text, load_config().summarize)
    assert plan.depth >= 2

    record, seen = watch(client.summarize(text))

    assert record["status"] == "succeeded", record["error"]
    assert record["text"] == plan.summary
    assert record["progress"]["depth"] == plan.depth
    assert {p["depth"] for p in seen} <= set(range(plan.depth + 1))
    assert all(p["chunks_done"] == p["chunks_total"] for p in seen if p["depth"] > 0)  # reducing: chunks all done
    assert len(simulator.requests_log(tag)) == len(plan.chunks)
    assert record["attempts"] == sum(len(level) for level in plan.levels)
    assert record["usage"] == plan.usage()


def test_a_short_text_is_one_call_bounded_by_max_tokens(worker, simulator, tag):
    text = f"{tag} The queue never sleeps.\n\n\n\nIt counts down instead,   and frees the slot."
    record = client.result(client.summarize(text, max_tokens=12), timeout=30)

    answer = answer_for(map_prompt(clean_text(text)))
    assert record["status"] == "succeeded"
    assert record["text"] == truncate_to_tokens(answer, 12)[0] != answer
    assert record["progress"] == {"chunks_done": 1, "chunks_total": 1, "depth": 0}
    assert len(simulator.requests_log(tag)) == 1 and record["attempts"] == 1


def test_a_document_that_fits_the_window_is_one_call(worker, simulator, tag):
    text = document(tag, 40_000)
    settings = get_config().summarize
    entry = get_config().model("gpt-4o-mini")
    fastest = plan_summary(text, entry, settings, "fastest")
    assert len(text.encode()) >= 40_000 and fastest.calls > 1  # what chunking would have cost

    record = client.result(client.summarize(text), timeout=30)

    prompt = map_prompt(clean_text(text))
    assert record["status"] == "succeeded", record["error"]
    assert len(simulator.requests_log(tag)) == 1 and record["attempts"] == 1
    assert record["text"] == truncate_to_tokens(answer_for(prompt), settings.summary_tokens)[0]
    assert record["progress"] == {"chunks_done": 1, "chunks_total": 1, "depth": 0}
    assert record["usage"]["prompt_tokens"] == count_tokens(prompt)
    direct = direct_call(text, entry, settings)
    chosen = plan_summary(text, entry, settings)
    assert (chosen.calls, chosen.input_tokens, chosen.cost_usd) == (1, direct.input_tokens, direct.cost_usd)
    assert direct.cost_usd < fastest.cost_usd


def test_a_document_beyond_the_window_goes_through_chunks_and_a_reduce(worker, simulator, tag):
    text = document(tag, 600_000)
    settings = get_config().summarize
    entry = get_config().model("gpt-4o-mini")
    chosen, fastest = plan_summary(text, entry, settings), plan_summary(text, entry, settings, "fastest")
    assert not direct_call(text, entry, settings).fits
    assert chosen.calls > 1 and chosen.depth >= 1 and chosen.cost_usd <= fastest.cost_usd
    assert len(chosen.chunks) < len(fastest.chunks)
    plan = replay(text, settings, strategy="cheapest")

    record = client.result(client.summarize(text), timeout=60)

    assert record["status"] == "succeeded", record["error"]
    assert record["text"] == plan.summary
    assert len(simulator.requests_log(tag)) == len(chosen.chunks)  # the map calls; the reduce prompts echo no tag
    assert record["progress"] == {"chunks_done": len(chosen.chunks), "chunks_total": len(chosen.chunks),
                                  "depth": plan.depth} and plan.depth >= 1
    assert record["attempts"] == sum(len(level) for level in plan.levels) > len(chosen.chunks)
    assert record["usage"] == plan.usage()
    assert record["usage"]["prompt_tokens"] <= chosen.input_tokens


def test_a_chunk_failing_for_good_fails_the_summary_naming_it(fastest_worker, simulator, tag):
    text = document(tag, 40_000, marks={30: "[[sim:400]]"})
    chunks = split_into_chunks(clean_text(text), 2000, 100)
    bad = [f"chunk {i} of {len(chunks)} failed: " for i, chunk in enumerate(chunks, 1) if "[[sim:400]]" in chunk]
    assert len(chunks) > 2 and bad

    record = client.result(client.summarize(text), timeout=30)

    assert record["status"] == "failed"
    assert record["error"]["kind"] == "bad_request" and record["error"]["status"] == 400
    assert record["error"]["message"].startswith(tuple(bad)), record["error"]["message"]
    rejected = [call for call in simulator.requests_log(tag) if call["status"] == 400]
    assert 1 <= len(rejected) <= len(bad)  # permanent: never retried


def test_cancelling_a_summary_cancels_its_queued_chunks(start_worker, simulator, tag):
    start_worker(concurrency=2, env=FASTEST)  # most chunk jobs wait in the queue while two run
    text = document(tag, 60_000, marks={n: "[[sim:slow;delay=1]]" for n in range(200)})
    job_id = client.summarize(text)
    deadline = time.monotonic() + 30
    while not (client.status(job_id)["progress"] or {}).get("chunks_total"):
        assert time.monotonic() < deadline, client.status(job_id)
        time.sleep(0.05)

    assert client.cancel(job_id) is True
    time.sleep(3)  # long enough for the two calls in flight to end and anything left to run

    record = client.status(job_id)
    total = record["progress"]["chunks_total"]
    children = store().children(job_id)
    assert record["status"] == "cancelled" and len(children) == total > 4
    assert {store().get(child).status.value for child in children} == {"cancelled"}
    assert len(simulator.requests_log(tag)) < total  # the queued ones never called the provider


def test_a_redelivered_summary_does_not_queue_its_chunks_twice(fastest_worker, simulator, tag):
    text = document(tag, 50_000, marks={40: "[[sim:slow;delay=1]]"})  # still mapping when the copy comes
    plan = replay(text, get_config().summarize)
    job_id = client.summarize(text, cache=False)  # no cache: a second set of chunk jobs would call again
    deadline = time.monotonic() + 30
    while not (client.status(job_id)["progress"] or {}).get("chunks_total"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # The same message again, as a broker redelivers it after a lost worker.
    from flowcloud.workers.core.celery_app import SUMMARIZE_TASK, app  # after the fixtures point the app at the test Redis

    spec = build_summarize_spec(text, cache=False)
    app.send_task(SUMMARIZE_TASK, args=[spec.model_dump(mode="json")], task_id=job_id, argsrepr=spec.preview())

    record = client.result(job_id, timeout=30)
    time.sleep(0.5)  # let the duplicate finish its own look

    assert record["status"] == "succeeded" and record["text"] == plan.summary
    assert len(simulator.requests_log(tag)) == len(plan.chunks)
    assert store().spent_usd() == pytest.approx(plan.cost(), rel=1e-9)


@pytest.mark.parametrize("text, options, reason", [
    ("", {}, "empty"),
    (" \n\t\x00 ", {}, "empty"),
    (None, {}, "as a string"),
    ("a text", {"model": "no-such-model"}, "no provider serves"),
    ("a text", {"model": "text-embedding-3-small"}, "embedding"),
    ("a text", {"max_tokens": 0}, "max_tokens"),
])
def test_bad_input_is_refused_before_queueing(text, options, reason):
    with pytest.raises(InvalidJob, match=reason):
        client.summarize(text, **options)
    assert store().client.llen("flowcloud") == 0 and not store().client.keys("flowcloud:job:*")
