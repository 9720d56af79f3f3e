"""Summarization: wall time for a 200 KB document against the time its tree of calls must take.

With ``summarize.strategy: fastest`` (set for this bench's workers), ``client.summarize``
cuts the text into chunks, summarizes them in parallel, then merges the summaries level
by level; the record's ``progress.depth`` is the number of merge levels. (With the
default, ``cheapest``, a 200 KB document fits the model's window and is one call: there
is no tree to time; the notes give both plans' expected cost.) With every call of a level running at once, the
document cannot be done sooner than ``(depth + 1) x latency``: that is the
baseline. The simulator answers after 1 s, so the tree's shape, not the
machine's speed, sets it. Wall time runs from submit to the record's
``finished_at``. The document is the same every run: generated English-like
text from a fixed seed.
"""

from __future__ import annotations

import random
import time

from bench.jobs import await_all, flowcloud_fetch, problems
from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import Stack

LATENCY = 1.0
DOCUMENT_BYTES = 200_000
FASTEST = {"FLOWCLOUD_SUMMARIZE__STRATEGY": "fastest"}
SLACK_SECONDS = 2.0  # the target: (depth + 1) x latency plus this
SEED = 20261101
WORDS = (
    "the queue worker provider model answer request budget cache batch summary chunk document report "
    "latency retry schedule customer invoice shipment warehouse contract quarter revenue forecast team "
    "meeting decision risk policy audit review release incident service region market product price "
    "analysis growth margin supplier delivery backlog capacity network storage cluster region plan"
).split()


def document(size: int = DOCUMENT_BYTES, seed: int = SEED) -> str:
    """About ``size`` bytes of ASCII prose in paragraphs, the same for the same seed."""
    rng = random.Random(seed)
    paragraphs, length = [], 0
    while length < size:
        sentences = []
        for _ in range(rng.randint(4, 8)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
            sentences.append(" ".join(words).capitalize() + f" in {rng.randint(2000, 2030)}.")
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        length += len(paragraph) + 2
    return "\n\n".join(paragraphs)[:size]


def run(stack: Stack, options: Options) -> Outcome:
    """Wall time of one summary against (depth + 1) x latency."""
    from flowcloud import client
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app

    text = document()
    with stack.simulator.latency(LATENCY), \
            stack.workers(app, "flowcloud.tasks", DEFAULT_QUEUE, options.pool, options.slots(), env=FASTEST):
        stack.simulator.reset()
        started = time.time()
        job_id = client.summarize(text)
        done = await_all([job_id], flowcloud_fetch(), timeout=120)
        calls = stack.simulator.calls()
    record = done.get(job_id) or {}
    progress = record.get("progress") or {}
    depth = progress.get("depth", 0)
    ideal = (depth + 1) * LATENCY
    wall = (record.get("finished_at") or time.time()) - started
    return Outcome(
        "summarization",
        f"one {len(text.encode()) // 1000} KB document at {LATENCY:g} s simulated latency, "
        f"worker {options.pool}/{options.slots()}",
        subject="flowcloud summarize", baseline="(depth + 1) x latency",
        figures=[Figure("wall time", "s", wall, ideal, Target("value", "<=", ideal + SLACK_SECONDS))],
        notes=[f"{progress.get('chunks_total', '?')} chunks, tree depth {depth}, {calls} provider calls; "
               f"{wall - ideal:+.2f} s over the tree's own time", plans_note(text)],
        problems=problems("summary", [job_id], done),
    )


def plans_note(text: str) -> str:
    """The two strategies' plans for ``text``, as a worker would make them: calls and expected cost."""
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.summary_plan import direct_call, plan_summary, summary_entry

    config = get_config()
    entry, settings = summary_entry(config, None), config.summarize
    direct = direct_call(text, entry, settings).cost_usd
    shown = [f"{plan.strategy} {plan.calls} calls ${plan.cost_usd:.6f} ({plan.cost_usd / direct:.2f}x direct)"
             for plan in (plan_summary(text, entry, settings, s) for s in ("cheapest", "fastest"))]
    return "plans, outputs at their max_tokens: " + ", ".join(shown)
