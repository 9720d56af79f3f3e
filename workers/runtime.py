"""Per-process worker state: the router with its pooled provider sessions, and the record store.

Built lazily on first use so that each forked pool process gets its own
connections instead of sharing a parent's sockets.
"""

from __future__ import annotations

import functools
import logging

from tasks.records import JobStore
from workers.config import get_config
from workers.router import Router

log = logging.getLogger(__name__)


_calls_in_flight: int | None = None


def size_for(calls_in_flight: int) -> None:
    """Size the connection pools for the calls one process makes at once (set at worker start,
    so a `--concurrency` given on the command line counts, not only the configured one)."""
    global _calls_in_flight
    _calls_in_flight = calls_in_flight
    router.cache_clear()


@functools.cache
def router() -> Router:
    config = get_config()
    return Router(config, pool_size=_calls_in_flight or config.worker.concurrency)


@functools.cache
def job_store() -> JobStore:
    return JobStore.open(get_config())


def already_finished(job_id: str) -> bool:
    """True for a job that must not run again: a redelivery after its result, or a cancelled job."""
    record = job_store().get(job_id)
    if record is not None and record.status.finished:
        log.info("job %s is already %s; not running it again", job_id, record.status.value)
        return True
    return False
