"""Throughput: N flowcloud jobs against N raw Celery no-op tasks, through the same workers and stack.

One measurement starts workers, enqueues N jobs, awaits them all and stops the workers.
The no-op and the bundled flowcloud jobs are measured in turn, three rounds each
(one with --quick), and each side's best round is reported.

flowcloud's jobs are queued as a producer with many prompts queues them, with
``submit_many`` (100 prompts a call), which carries ``worker.bundle_size`` jobs
per message; a second flowcloud run queues the same jobs with one ``submit`` call,
and one message, per job. The raw no-op tasks go one message each, as Celery sends them.
Workers run at concurrency 200, twice flowcloud's default: with 100 calls of
200 ms in flight, no worker can pass 500 jobs/s, about what the no-op reaches
here, and the figure would show that ceiling instead of flowcloud's cost.
The kinds of job differ only in what is sent and where completion shows:
a raw Celery no-op leaves a ``celery-task-meta-<id>`` result, a flowcloud job
finishes its record. Both are awaited the same way, by polling Redis in
pipelined batches, and timed from the first enqueue to the last ``finished``
timestamp written by the worker, so the poll interval does not count.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import MODEL, Stack, Workers

# Twice flowcloud's default: a worker holding 100 calls of 200 ms cannot pass 500 jobs/s (calls in flight
# = rate x latency), about what a no-op reaches here, so at 100 the figure would show that ceiling, not
# what flowcloud costs. The no-op runs with the same setting, which changes nothing for it.
THROUGHPUT_CONCURRENCY = 200
FULL_JOBS = 5000
QUICK_JOBS = 300
POLL_SECONDS = 0.2
# Jobs queued per submit_many call (and between progress updates).
ENQUEUE_SLICE = 100
# Jobs finish roughly in order, so each poll reads the oldest pending ones first
# and reads further only while most of a batch has finished.
POLL_BATCH = 500
# A job not finished this long after the last one finished is taken as lost (an
# unacked message comes back only after the visibility timeout): stop waiting.
STALL_SECONDS = 15.0
# The no-op and flowcloud's bundled jobs are measured in turn this many times, and each keeps its best
# round, so that a burst of other work on a shared machine lands on one round, not on one side.
ROUNDS = 3
# Bundled jobs must outrun bare Celery messages by this much, each job's own work included...
TARGET_RATIO = 1.3
# ...which is what a worker spends on one of them, in CPU milliseconds (2 cores, Python 3.11).
TARGET_CPU_MS = 1.7


@dataclass
class Measurement:
    """What one run measured; times in seconds, memory in bytes."""

    name: str
    pool: str
    concurrency: int
    jobs: int
    processes: int = 1
    finished: int = 0
    failed: int = 0
    enqueue_seconds: float = 0.0
    elapsed: float = 0.0
    worker_cpu: float = 0.0
    redis_cpu: float = 0.0
    rss_idle: int = 0
    rss_peak: int = 0
    max_in_flight: int | None = None
    first_error: str | None = None

    @property
    def jobs_per_s(self) -> float:
        return self.finished / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def enqueue_per_s(self) -> float:
        return self.jobs / self.enqueue_seconds if self.enqueue_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.finished == self.jobs


class JobKind(Protocol):
    name: str
    calls_provider: bool
    app_module: str
    queue: str

    def app(self): ...
    def submit(self, first: int, count: int) -> list[str]:
        """Queue jobs ``first`` to ``first + count - 1``; their ids."""
    def check(self, ids: list[str]) -> list[tuple[bool, float] | None]:
        """Per id: None while unfinished, else (succeeded, finished at, epoch seconds)."""
    def error(self, job_id: str) -> str: ...


class NoopKind:
    name, app_module, calls_provider = "celery no-op", "bench.baseline_app", False

    def __init__(self) -> None:
        from bench.baseline_app import BASELINE_QUEUE, app, noop

        self.queue, self._app, self._task = BASELINE_QUEUE, app, noop
        self._redis = app.backend.client

    def app(self):
        return self._app

    def submit(self, first: int, count: int) -> list[str]:
        return [self._task.apply_async().id for _ in range(count)]

    def check(self, ids: list[str]) -> list[tuple[bool, float] | None]:
        metas = self._redis.mget([f"celery-task-meta-{job_id}" for job_id in ids])
        return [_celery_outcome(json.loads(raw)) if raw else None for raw in metas]

    def error(self, job_id: str) -> str:
        return str(self._app.AsyncResult(job_id).result)


def _celery_outcome(meta: dict) -> tuple[bool, float] | None:
    if meta["status"] not in ("SUCCESS", "FAILURE", "REVOKED"):
        return None
    return meta["status"] == "SUCCESS", datetime.fromisoformat(meta["date_done"]).timestamp()


class FlowcloudKind:
    """flowcloud jobs as a producer with many prompts queues them: ``submit_many``, which carries
    ``worker.bundle_size`` jobs per message; or, ``one_by_one``, a ``submit`` call and a message per job."""

    app_module, calls_provider = "flowcloud.tasks", True

    def __init__(self, one_by_one: bool = False) -> None:
        from flowcloud import client
        from flowcloud.workers.core.records import KEY_PREFIX, JobStore
        from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, app
        from flowcloud.workers.core.config import get_config

        self.queue, self._app, self._client, self._prefix = DEFAULT_QUEUE, app, client, KEY_PREFIX
        self._store = JobStore.open(get_config())
        self.one_by_one = one_by_one
        self._run = uuid.uuid4().hex[:8]
        self.name = "flowcloud, submit per job" if one_by_one else "flowcloud"

    def app(self):
        return self._app

    def submit(self, first: int, count: int) -> list[str]:
        # Each run's own prompts: the answers of an earlier run are in the cache.
        prompts = [f"Benchmark job {self._run}-{i}: reply with one short sentence." for i in range(first, first + count)]
        if self.one_by_one:
            return [self._client.submit(prompt, model=MODEL, max_tokens=16) for prompt in prompts]
        return self._client.submit_many(prompts, model=MODEL, max_tokens=16)

    def check(self, ids: list[str]) -> list[tuple[bool, float] | None]:
        pipe = self._store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self._prefix + job_id, "status", "finished_at")
        return [_record_outcome(status, finished_at) for status, finished_at in pipe.execute()]

    def error(self, job_id: str) -> str:
        record = self._store.get(job_id)
        return f"{record.status.value}: {record.error}" if record else "record missing"


def _record_outcome(status: str | None, finished_at: str | None) -> tuple[bool, float] | None:
    status = json.loads(status) if status else None
    if status not in ("succeeded", "failed", "cancelled"):
        return None
    return status == "succeeded", json.loads(finished_at)


def measure(stack: Stack, kind: JobKind, jobs: int, pool: str, concurrency: int, timeout: float,
            processes: int = 1) -> Measurement:
    """Run ``jobs`` jobs of ``kind`` through fresh workers and return what was measured."""
    result = Measurement(kind.name, pool, concurrency, jobs, processes)
    with stack.workers(kind.app(), kind.app_module, kind.queue, pool, concurrency, processes) as workers:
        result.rss_idle = result.rss_peak = workers.rss_bytes()
        stack.simulator.reset()
        cpu_before, redis_before = workers.cpu_seconds(), stack.redis_cpu_seconds()
        with Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                      disable=not sys.stderr.isatty()) as progress:
            label = f"{kind.name} {processes}x{pool}/{concurrency}"
            started = time.time()
            ids = _enqueue(kind, jobs, progress, progress.add_task(f"{label}: enqueue", total=jobs))
            result.enqueue_seconds = time.time() - started
            last = _await(kind, ids, workers, result, progress.add_task(f"{label}: finished", total=jobs),
                          progress, time.monotonic() + timeout)
        result.elapsed = (last or time.time()) - started
        result.worker_cpu = workers.cpu_seconds() - cpu_before
        result.redis_cpu = stack.redis_cpu_seconds() - redis_before
        if kind.calls_provider:
            result.max_in_flight = stack.simulator.stats()["max_in_flight"]
    return result


def _enqueue(kind: JobKind, jobs: int, progress: Progress, task) -> list[str]:
    ids: list[str] = []
    for first in range(0, jobs, ENQUEUE_SLICE):
        ids += kind.submit(first, min(ENQUEUE_SLICE, jobs - first))
        progress.update(task, completed=len(ids))
    return ids


def _await(kind: JobKind, ids: list[str], workers: Workers, result: Measurement, task,
           progress: Progress, deadline: float) -> float | None:
    """Poll until every job finished or the deadline passed; returns the last finish time."""
    pending, last = list(ids), None
    stalled_at = time.monotonic() + STALL_SECONDS
    while pending and time.monotonic() < min(deadline, stalled_at):
        finished_before = result.finished
        still: list[str] = []
        for start in range(0, len(pending), POLL_BATCH):
            batch = pending[start:start + POLL_BATCH]
            outcomes = kind.check(batch)
            for job_id, outcome in zip(batch, outcomes):
                if outcome is None:
                    still.append(job_id)
                    continue
                succeeded, finished_at = outcome
                result.finished += 1
                last = max(last or finished_at, finished_at)
                if not succeeded:
                    result.failed += 1
                    result.first_error = result.first_error or f"{job_id}: {kind.error(job_id)}"
            if sum(o is None for o in outcomes) > len(batch) // 2:
                still += pending[start + POLL_BATCH:]
                break
        pending = still
        if result.finished > finished_before:
            stalled_at = time.monotonic() + STALL_SECONDS
        result.rss_peak = max(result.rss_peak, workers.rss_bytes())
        progress.update(task, completed=result.finished)
        if pending:
            time.sleep(POLL_SECONDS)
    return last


def best(rounds: list[Measurement]) -> Measurement:
    """The round that went fastest: on a shared machine, what the others lost is time other work took."""
    return max(rounds, key=lambda m: (m.ok, m.jobs_per_s))


def run(stack: Stack, options: Options) -> Outcome:
    """Throughput of flowcloud jobs against raw Celery no-op tasks, same pool, concurrency and stack."""
    jobs = options.jobs or options.pick(FULL_JOBS, QUICK_JOBS)
    timeout = options.timeout or 60 + jobs / 20
    slots = options.slots(THROUGHPUT_CONCURRENCY)
    # A new FlowcloudKind each round: its prompts are its own, so no round finds another's in the cache.
    rounds = [measure(stack, kind, jobs, options.pool, slots, timeout, options.workers)
              for _ in range(options.pick(ROUNDS, 1)) for kind in (NoopKind(), FlowcloudKind())]
    baseline, flowcloud = (best(rounds[side::2]) for side in (0, 1))
    one_by_one = measure(stack, FlowcloudKind(one_by_one=True), jobs, options.pool, slots, timeout, options.workers)
    measured = [baseline, flowcloud, one_by_one]
    per_job = {m.name: (m.worker_cpu * 1000 / max(m.finished, 1), m.redis_cpu * 1000 / max(m.finished, 1))
               for m in measured}
    setup = f"{options.workers} x {options.pool}/{slots}"
    best_of = f", best of {len(rounds) // 2} rounds each" if len(rounds) > 2 else ""
    outcome = Outcome(
        "throughput",
        f"{jobs:,} jobs each at {options.latency * 1000:g} ms simulated latency, worker {setup}{best_of}",
        subject="flowcloud jobs through the simulator", baseline="raw Celery no-op tasks",
        figures=[
            Figure("throughput", "jobs/s", flowcloud.jobs_per_s, baseline.jobs_per_s,
                   Target("ratio", ">=", TARGET_RATIO)),
            Figure("throughput, a submit and a message per job", "jobs/s", one_by_one.jobs_per_s,
                   baseline.jobs_per_s, plot=False),
            Figure("worker CPU per job", "ms", per_job[flowcloud.name][0], per_job[baseline.name][0],
                   Target("value", "<=", TARGET_CPU_MS), plot=False),
            Figure("worker CPU per job, a message per job", "ms", per_job[one_by_one.name][0],
                   per_job[baseline.name][0], plot=False),
            Figure("Redis CPU per job", "ms", per_job[flowcloud.name][1], per_job[baseline.name][1], plot=False),
            Figure("worker RSS, peak", "MB", flowcloud.rss_peak / 2**20, baseline.rss_peak / 2**20, plot=False),
        ],
        notes=[f"enqueue rate: {flowcloud.enqueue_per_s:.0f} jobs/s flowcloud ({one_by_one.enqueue_per_s:.0f} "
               f"submitting one by one), {baseline.enqueue_per_s:.0f} tasks/s baseline; at most "
               f"{flowcloud.max_in_flight} calls were open at the simulator at once"],
    )
    for m in rounds + [one_by_one]:
        if m.first_error:
            outcome.problems.append(f"{m.name}: {m.failed} of {m.jobs} failed; first {m.first_error}")
        if m.finished < m.jobs:
            outcome.problems.append(f"{m.name}: {m.jobs - m.finished} of {m.jobs} never finished (see the worker log)")
    return outcome
