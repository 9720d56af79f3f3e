"""Submitting and awaiting jobs the way the benchmarks need: many at once, read back in bulk.

Waiting polls Redis in pipelined batches instead of waiting on each job in
turn, so thousands of jobs cost a few round trips per poll and the poll
interval never enters a figure: every time is taken from timestamps the jobs
wrote themselves (a flowcloud record's ``finished_at``, the baseline task's
returned ``finished_at`` or Celery's ``date_done``). Import only after the
stack has named the configuration.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import Any, Callable

POLL_SECONDS = 0.25
BATCH = 500
# No job finishing for this long means the rest are lost (an unacked message comes back
# only after the visibility timeout): stop waiting and report them.
STALL_SECONDS = 30.0
CELERY_FINISHED = ("SUCCESS", "FAILURE", "REVOKED")

Fetch = Callable[[list[str]], list[dict[str, Any] | None]]


def await_all(ids: list[str], fetch: Fetch, timeout: float, stall: float = STALL_SECONDS) -> dict[str, dict]:
    """Finished jobs by id, once all of ``ids`` finished, ``timeout`` ran out or nothing finished for ``stall`` s.

    ``fetch`` reads a batch of ids and returns, per id, its final state or None while it runs.
    Jobs finish roughly in the order they were queued, so each poll reads the oldest pending
    batch first and reads on only while most of a batch has finished: the bench's polling
    must not take the CPU the workers are being measured on.
    """
    done: dict[str, dict] = {}
    pending = list(ids)
    deadline = time.monotonic() + timeout
    stalled_at = time.monotonic() + stall
    while pending and time.monotonic() < min(deadline, stalled_at):
        still: list[str] = []
        for start in range(0, len(pending), BATCH):
            batch = pending[start:start + BATCH]
            states = fetch(batch)
            for job_id, state in zip(batch, states):
                if state is None:
                    still.append(job_id)
                else:
                    done[job_id] = state
            if states.count(None) > len(batch) // 2:
                still += pending[start + BATCH:]
                break
        if len(still) < len(pending):
            stalled_at = time.monotonic() + stall
        pending = still
        if pending:
            time.sleep(POLL_SECONDS)
    return done


def flowcloud_fetch() -> Fetch:
    """Reads flowcloud records: the whole record (JSON-decoded) once its status is final.

    Statuses first, whole records only for the jobs that finished: a poll of jobs still
    running costs one small read each.
    """
    from flowcloud.workers.core.records import FINISHED_STATUSES, KEY_PREFIX, JobStore
    from flowcloud.workers.core.config import get_config

    client = JobStore.open(get_config()).client

    def fetch(ids: list[str]) -> list[dict[str, Any] | None]:
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(KEY_PREFIX + job_id, "status")
        finished = [job_id for job_id, status in zip(ids, pipe.execute())
                    if status and json.loads(status) in FINISHED_STATUSES]
        for job_id in finished:
            pipe.hgetall(KEY_PREFIX + job_id)
        records = {job_id: {key: json.loads(value) for key, value in raw.items()}
                   for job_id, raw in zip(finished, pipe.execute())}
        return [records.get(job_id) for job_id in ids]

    return fetch


def celery_fetch(app) -> Fetch:
    """Reads raw Celery results: ``status``, ``result`` and ``finished_at`` (epoch seconds) once final."""
    client = app.backend.client

    def fetch(ids: list[str]) -> list[dict[str, Any] | None]:
        metas = client.mget([f"celery-task-meta-{job_id}" for job_id in ids])
        return [_celery_state(json.loads(raw)) if raw else None for raw in metas]

    return fetch


def _celery_state(meta: dict) -> dict[str, Any] | None:
    if meta["status"] not in CELERY_FINISHED:
        return None
    result = meta.get("result")
    finished_at = result.get("finished_at") if isinstance(result, dict) else None
    if finished_at is None:
        finished_at = datetime.fromisoformat(meta["date_done"]).timestamp()
    status = "succeeded" if meta["status"] == "SUCCESS" else "failed"
    return {"status": status, "finished_at": finished_at, "error": None if status == "succeeded" else result}


def problems(what: str, ids: list[str], done: dict[str, dict]) -> list[str]:
    """One line each for jobs that failed and jobs that never finished, naming the first failure."""
    lines = []
    failed = [(job_id, done[job_id]) for job_id in ids if job_id in done and done[job_id]["status"] != "succeeded"]
    if failed:
        job_id, state = failed[0]
        lines.append(f"{what}: {len(failed)} of {len(ids)} jobs failed; first, {job_id}: "
                     f"{state.get('status')}: {state.get('error')}")
    missing = sum(job_id not in done for job_id in ids)
    if missing:
        lines.append(f"{what}: {missing} of {len(ids)} jobs never finished (see the worker log)")
    return lines


def last_finish(done: dict[str, dict]) -> float | None:
    """The latest ``finished_at`` among finished jobs, epoch seconds."""
    return max((state["finished_at"] for state in done.values() if state.get("finished_at")), default=None)


def submit_paced(count: int, per_second: float, submit: Callable[[int], str]) -> list[tuple[str, float, float]]:
    """Call ``submit(i)`` ``count`` times at a steady ``per_second``.

    Returns, per job: its id, when submit was called (epoch seconds) and how long
    the call took. A submit that runs late pushes the later slots back instead of
    being made up in a burst, so the rate the workers see never exceeds ``per_second``.
    """
    interval = 1.0 / per_second
    sent = []
    next_at = time.monotonic()
    for i in range(count):
        wait = next_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        submitted_at, clock = time.time(), time.perf_counter()
        job_id = submit(i)
        sent.append((job_id, submitted_at, time.perf_counter() - clock))
        next_at = max(next_at + interval, time.monotonic())
    return sent


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` by nearest rank, NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
