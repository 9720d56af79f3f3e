"""Added latency: what a job spends outside the provider's own latency, at a steady 50 jobs/s.

Each job's end-to-end time runs from the moment the bench calls submit (the
client's clock) to the moment the worker finished it (the record's
``finished_at``, or the time the baseline task returned); the simulator's fixed
latency is subtracted. The baseline is a raw Celery task on the same stack, pool
and concurrency that makes the same chat completion request with a pooled
``requests`` session and nothing else: no record, no cache, no retry logic.
The first second of each run warms connections and is not counted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bench.jobs import await_all, celery_fetch, flowcloud_fetch, percentile, problems, submit_paced
from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import MODEL, Stack

RATE = 50  # jobs per second
FULL_SECONDS = 30
QUICK_SECONDS = 6
WARM_UP_SECONDS = 1
MAX_TOKENS = 16
# The median job may spend this much more outside the provider than a raw Celery task making the same call.
TARGET_P50_EXCESS_MS = 1.5
TARGET_P99_MS = 25.0


@dataclass
class Run:
    """One side's counted jobs: added latency and the time the submit call itself took, in ms."""

    added_ms: list[float]
    submit_ms: list[float]
    problems: list[str]


def run(stack: Stack, options: Options) -> Outcome:
    """Added latency p50 and p99 of flowcloud jobs against raw Celery tasks making the same call."""
    seconds = options.pick(FULL_SECONDS, QUICK_SECONDS)
    count = RATE * (seconds + WARM_UP_SECONDS)
    tag = uuid.uuid4().hex[:8]
    baseline = _baseline(stack, options, count, tag)
    flowcloud = _flowcloud(stack, options, count, tag)
    p50, p99 = percentile(flowcloud.added_ms, 0.50), percentile(flowcloud.added_ms, 0.99)
    base50, base99 = percentile(baseline.added_ms, 0.50), percentile(baseline.added_ms, 0.99)
    return Outcome(
        "latency",
        f"{RATE} jobs/s for {seconds} s at {options.latency * 1000:g} ms simulated latency, "
        f"worker {options.pool}/{options.slots()}; end to end minus the simulator's latency",
        subject="flowcloud jobs", baseline="raw Celery task, same HTTP call with requests",
        figures=[
            Figure("added latency p50", "ms", p50, base50, Target("excess", "<=", TARGET_P50_EXCESS_MS)),
            Figure("added latency p99", "ms", p99, base99, Target("value", "<=", TARGET_P99_MS)),
            Figure("submit call p50", "ms", percentile(flowcloud.submit_ms, 0.5),
                   percentile(baseline.submit_ms, 0.5), plot=False),
        ],
        notes=[f"flowcloud over the baseline: {p50 - base50:+.1f} ms p50, {p99 - base99:+.1f} ms p99 "
               f"({len(flowcloud.added_ms)} and {len(baseline.added_ms)} jobs counted); the submit call "
               "is part of the added latency"],
        problems=baseline.problems + flowcloud.problems,
    )


def _baseline(stack: Stack, options: Options, count: int, tag: str) -> Run:
    from bench.baseline_app import BASELINE_QUEUE, app, http_call

    url = stack.simulator.url + "/chat/completions"

    def submit(i: int) -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": _prompt(tag, "baseline", i)}],
                "max_tokens": MAX_TOKENS}
        return http_call.apply_async(args=[url, body]).id

    with stack.workers(app, "bench.baseline_app", BASELINE_QUEUE, options.pool, options.slots()):
        return _paced_run(stack, submit, celery_fetch(app), count, "baseline")


def _flowcloud(stack: Stack, options: Options, count: int, tag: str) -> Run:
    from flowcloud import client
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app

    def submit(i: int) -> str:
        return client.submit(_prompt(tag, "flowcloud", i), model=MODEL, max_tokens=MAX_TOKENS)

    with stack.workers(app, "flowcloud.tasks", DEFAULT_QUEUE, options.pool, options.slots()):
        return _paced_run(stack, submit, flowcloud_fetch(), count, "flowcloud")


def _paced_run(stack: Stack, submit, fetch, count: int, what: str) -> Run:
    sent = submit_paced(count, RATE, submit)
    ids = [job_id for job_id, *_ in sent]
    done = await_all(ids, fetch, timeout=60 + count / RATE)
    latency = stack.simulator.latency_at_start
    counted = [(job_id, submitted_at, took) for job_id, submitted_at, took in sent[RATE * WARM_UP_SECONDS:]
               if done.get(job_id, {}).get("status") == "succeeded"]
    return Run(added_ms=[(done[job_id]["finished_at"] - submitted_at - latency) * 1000
                         for job_id, submitted_at, _ in counted],
               submit_ms=[took * 1000 for *_, took in counted],
               problems=problems(what, ids, done))


def _prompt(tag: str, kind: str, i: int) -> str:
    # Unique per job, so no answer comes from the cache or a coalesced twin.
    return f"Latency probe {tag}-{kind}-{i}: reply with one short sentence."
