"""Coalescing: provider calls for 100 identical prompts submitted at once.

The same worker gets two bursts of 100 identical jobs, each burst a new prompt
queued in one ``submit_many`` call while the worker does not consume, then
released at once: first with ``cache=False`` (the baseline: no cache, no
coalescing, one call per job), then as flowcloud submits by default, where the
first job leads the call and the others wait for its answer. Wall time runs
from the release to the last job's ``finished_at``; the simulator counts the calls.
"""

from __future__ import annotations

import time
import uuid

from bench.jobs import await_all, flowcloud_fetch, last_finish, problems
from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import MODEL, Stack, Workers

IDENTICAL = 100
TIMEOUT = 120.0


def run(stack: Stack, options: Options) -> Outcome:
    """Provider calls and wall time for identical jobs, coalesced against ``cache=False``."""
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app

    tag = uuid.uuid4().hex[:8]
    with stack.workers(app, "flowcloud.tasks", DEFAULT_QUEUE, options.pool, options.slots()) as workers:
        uncached = _burst(stack, workers, f"Coalescing probe {tag}, uncached: name three rivers.", cache=False)
        coalesced = _burst(stack, workers, f"Coalescing probe {tag}: name three rivers.", cache=True)
    return Outcome(
        "coalescing",
        f"{IDENTICAL} identical prompts submitted at once, {options.latency * 1000:g} ms simulated latency",
        subject="flowcloud, cache on", baseline="the same jobs with cache=False",
        figures=[
            Figure("provider calls", "calls", coalesced["calls"], uncached["calls"], Target("value", "<=", 1)),
            Figure("wall time", "s", coalesced["wall"], uncached["wall"], plot=False),
        ],
        notes=[f"{coalesced['cached']} of {IDENTICAL} coalesced jobs were answered from the leader's answer"],
        problems=uncached["problems"] + coalesced["problems"],
    )


def _burst(stack: Stack, workers: Workers, prompt: str, cache: bool) -> dict:
    """Release ``IDENTICAL`` copies of ``prompt`` at once and await them: calls, wall time, problems."""
    from flowcloud import client
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app

    stack.simulator.reset()
    with workers.paused(app, DEFAULT_QUEUE):
        ids = client.submit_many([prompt] * IDENTICAL, model=MODEL, max_tokens=16, cache=cache)
        released = time.time()
    done = await_all(ids, flowcloud_fetch(), timeout=TIMEOUT)
    return {
        "calls": stack.simulator.calls(),
        "wall": (last_finish(done) or time.time()) - released,
        "cached": sum(bool(state.get("cached")) for state in done.values()),
        "problems": problems("cache on" if cache else "cache=False", ids, done),
    }
