"""Throughput: N flowcloud jobs against N raw Celery no-op tasks, through the same workers and stack.

One measurement starts workers, enqueues N jobs, awaits them all and stops the workers.

The two kinds of job differ only in what is sent and where completion shows:
a raw Celery no-op leaves a ``celery-task-meta-<id>`` result, a flowcloud job
finishes its record. Both are awaited the same way, by polling Redis in
pipelined batches, and timed from the first enqueue to the last ``finished``
timestamp written by the worker, so the poll interval does not count.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.options import Options
from bench.results import Figure, Outcome, Target
from bench.stack import MODEL, Stack, Workers

FULL_JOBS = 5000
QUICK_JOBS = 300
POLL_SECONDS = 0.2
# Jobs finish roughly in order, so each poll reads the oldest pending ones first
# and reads further only while most of a batch has finished.
POLL_BATCH = 500
# A job not finished this long after the last one finished is taken as lost (an
# unacked message comes back only after the visibility timeout): stop waiting.
STALL_SECONDS = 15.0


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
    def submit(self, i: int) -> str: ...
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

    def submit(self, i: int) -> str:
        return self._task.apply_async().id

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
    name, app_module, calls_provider = "flowcloud", "workers.celery_app", True

    def __init__(self) -> None:
        from tasks import client
        from tasks.records import KEY_PREFIX, JobStore
        from workers.celery_app import DEFAULT_QUEUE, app
        from workers.config import get_config

        self.queue, self._app, self._submit, self._prefix = DEFAULT_QUEUE, app, client.submit, KEY_PREFIX
        self._store = JobStore.open(get_config())

    def app(self):
        return self._app

    def submit(self, i: int) -> str:
        return self._submit(f"Benchmark job {i}: reply with one short sentence.", model=MODEL, max_tokens=16)

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
    ids = []
    for i in range(jobs):
        ids.append(kind.submit(i))
        if i % 100 == 99:
            progress.update(task, completed=i + 1)
    progress.update(task, completed=jobs)
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


def run(stack: Stack, options: Options) -> Outcome:
    """Throughput of flowcloud jobs against raw Celery no-op tasks, same pool, concurrency and stack."""
    jobs = options.jobs or options.pick(FULL_JOBS, QUICK_JOBS)
    timeout = options.timeout or 60 + jobs / 20
    measured = [measure(stack, kind, jobs, options.pool, options.concurrency, timeout, options.workers)
                for kind in (NoopKind(), FlowcloudKind())]
    baseline, flowcloud = measured
    per_job = {m.name: (m.worker_cpu * 1000 / max(m.finished, 1), m.redis_cpu * 1000 / max(m.finished, 1))
               for m in measured}
    setup = f"{options.workers} x {options.pool}/{options.concurrency}"
    outcome = Outcome(
        "throughput", f"{jobs:,} jobs each at {options.latency * 1000:g} ms simulated latency, worker {setup}",
        subject="flowcloud jobs through the simulator", baseline="raw Celery no-op tasks",
        figures=[
            Figure("throughput", "jobs/s", flowcloud.jobs_per_s, baseline.jobs_per_s, Target("ratio", ">=", 1.0)),
            Figure("worker CPU per job", "ms", per_job[flowcloud.name][0], per_job[baseline.name][0], plot=False),
            Figure("Redis CPU per job", "ms", per_job[flowcloud.name][1], per_job[baseline.name][1], plot=False),
            Figure("worker RSS, peak", "MB", flowcloud.rss_peak / 2**20, baseline.rss_peak / 2**20, plot=False),
        ],
        notes=[f"enqueue rate: {flowcloud.enqueue_per_s:.0f} jobs/s flowcloud, {baseline.enqueue_per_s:.0f} "
               f"tasks/s baseline; at most {flowcloud.max_in_flight} calls were open at the simulator at once"],
    )
    for m in measured:
        if m.first_error:
            outcome.problems.append(f"{m.name}: {m.failed} of {m.jobs} failed; first {m.first_error}")
        if m.finished < m.jobs:
            outcome.problems.append(f"{m.name}: {m.jobs - m.finished} of {m.jobs} never finished (see the worker log)")
    return outcome
