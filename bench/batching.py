"""Batching: provider calls and wall time for 1,000 short prompts to a model served by legacy completions.

The model (``batch: completions``) takes a list of prompts per call, so
flowcloud merges short prompts from independent jobs into one call. The same
1,000 distinct prompts run twice on fresh workers: first with batching off
(``FLOWCLOUD_BATCHING__ENABLED=false``, the baseline: one call per job), then
as configured. Each time the jobs are queued while the worker does not
consume and are then released together, so the worker sees them all arrive
within one second whatever this machine's submit rate. Wall time runs from
the release to the last job's ``finished_at``; the simulator counts the calls.
"""

from __future__ import annotations

import time
import uuid

from bench.jobs import await_all, flowcloud_fetch, last_finish, problems
from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import BATCH_MODEL, Stack

FULL_PROMPTS = 1000
QUICK_PROMPTS = 200
TARGET_CALLS = 70  # for 1,000 prompts
MAX_TOKENS = 16
OFF = {"FLOWCLOUD_BATCHING__ENABLED": "false"}


def run(stack: Stack, options: Options) -> Outcome:
    """Calls and wall time with batching, against the same jobs with batching off."""
    prompts = options.pick(FULL_PROMPTS, QUICK_PROMPTS)
    tag = uuid.uuid4().hex[:8]
    unbatched = _measure(stack, options, prompts, f"{tag}-off", OFF)
    batched = _measure(stack, options, prompts, f"{tag}-on", {})
    call_goal = TARGET_CALLS * prompts / FULL_PROMPTS
    sizes = batched["sizes"]  # per job: how many jobs shared its call
    return Outcome(
        "batching",
        f"{prompts:,} short prompts to {BATCH_MODEL} at {options.latency * 1000:g} ms simulated latency, "
        f"worker {options.pool}/{options.slots()}",
        subject="flowcloud, batching on", baseline="batching off",
        figures=[
            Figure("provider calls", "calls", batched["calls"], unbatched["calls"],
                   Target("value", "<=", round(call_goal))),
            Figure("wall time", "s", batched["wall"], unbatched["wall"], Target("ratio", "<=", 1.0)),
        ],
        notes=[f"{prompts / max(batched['calls'], 1):.1f} prompts per call on average, "
               f"{max(sizes, default=0)} in the largest batch"],
        problems=unbatched["problems"] + batched["problems"],
    )


def _measure(stack: Stack, options: Options, prompts: int, tag: str, env: dict[str, str]) -> dict:
    from flowcloud import client
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app

    texts = [f"Batch probe {tag}-{i}: say one word." for i in range(prompts)]
    with stack.workers(app, "flowcloud.tasks", DEFAULT_QUEUE, options.pool, options.slots(),
                       env=env) as workers:
        stack.simulator.reset()
        with workers.paused(app, DEFAULT_QUEUE):
            ids = client.submit_many(texts, model=BATCH_MODEL, max_tokens=MAX_TOKENS)
            released = time.time()
        done = await_all(ids, flowcloud_fetch(), timeout=60 + prompts * options.latency)
        calls = stack.simulator.calls()
    return {
        "calls": calls,
        "wall": (last_finish(done) or time.time()) - released,
        "sizes": [state.get("batch_size") or 1 for state in done.values() if state.get("status") == "succeeded"],
        "problems": problems("batching " + ("off" if env else "on"), ids, done),
    }
