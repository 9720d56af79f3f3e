"""In-flight capacity: how many slow provider calls one worker process holds open at once, and at what memory.

One worker process, started with as many slots as jobs, gets that many jobs
while the simulator answers after 10 s, so every call it starts stays open
until the last one has started. The jobs are queued while the worker is told
not to consume, then released at once. The simulator counts the requests it holds
(``/_sim/stats`` ``max_in_flight``); a sampler thread reads the worker's
resident memory meanwhile. The baseline is the same worker's memory idle,
after start and before the first job.
"""

from __future__ import annotations

import threading
import time
import uuid

from bench.jobs import await_all, flowcloud_fetch, problems
from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import MODEL, Stack, Workers

LATENCY = 10.0
FULL_CALLS = 2000
QUICK_CALLS = 300
RSS_TARGET_MB = 400
SAMPLE_SECONDS = 0.5
SETTLE_SECONDS = 1.0  # after start, before idle memory is read: the worker finishes its own set-up
MB = 2**20


class PeakMemory(threading.Thread):
    """Samples the workers' resident memory until stopped; keeps the highest reading."""

    def __init__(self, workers: Workers) -> None:
        super().__init__(daemon=True)
        self.workers = workers
        self.peak = workers.rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, self.workers.rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def run(stack: Stack, options: Options) -> Outcome:
    """Most provider calls one worker process held at once, and its memory then against idle."""
    from flowcloud import client
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app

    calls = options.pick(FULL_CALLS, QUICK_CALLS)
    tag = uuid.uuid4().hex[:8]
    with stack.simulator.latency(LATENCY), \
            stack.workers(app, "flowcloud.tasks", DEFAULT_QUEUE, options.pool, calls) as workers:
        time.sleep(SETTLE_SECONDS)
        idle = workers.rss_bytes()
        stack.simulator.reset()
        sampler = PeakMemory(workers)
        sampler.start()
        # Queued while the worker does not consume, so the bench's own submitting never competes
        # with the worker for the CPU: the figure is what a worker holds, not how fast one client fills it.
        with workers.paused(app, DEFAULT_QUEUE):
            ids = client.submit_many([f"Capacity probe {tag}-{i}: reply with one short sentence."
                                      for i in range(calls)], model=MODEL, max_tokens=16)
            started = time.monotonic()
        done = await_all(ids, flowcloud_fetch(), timeout=3 * LATENCY + calls / 10)
        drained = time.monotonic() - started
        peak = sampler.stop()
        in_flight = stack.simulator.stats()["max_in_flight"]
        arrivals = stack.simulator.arrivals(calls)
    goal = FULL_CALLS if not options.quick else calls
    return Outcome(
        "capacity",
        f"{calls:,} jobs at {LATENCY:g} s simulated latency, one worker process, {options.pool}/{calls}",
        subject="worker under load", baseline="the same worker idle",
        figures=[
            Figure("provider calls in flight at once", "calls", in_flight, None, Target("value", ">=", goal)),
            Figure("worker RSS", "MB", peak / MB, idle / MB, Target("value", "<=", RSS_TARGET_MB)),
        ],
        notes=[f"{(peak - idle) / max(in_flight, 1) / 1024:.0f} KB of memory per call in flight; "
               f"all {calls:,} jobs done {drained:.1f} s after the worker started consuming",
               _ramp(arrivals)],
        problems=problems("flowcloud", ids, done),
    )


def _ramp(arrivals: list[float]) -> str:
    """How fast the worker started its calls: what bounds the calls it holds when it cannot start them all
    before the first one returns."""
    if len(arrivals) < 2:
        return "fewer than two calls reached the simulator"
    span = arrivals[-1] - arrivals[0]
    return (f"the worker started its {len(arrivals):,} calls over {span:.1f} s "
            f"({len(arrivals) / max(span, 1e-3):.0f} per second)")
