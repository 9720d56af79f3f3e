"""Per-process worker state: the router with its pooled provider connections, the record store,
and the threads that run bundled jobs.

Built lazily on first use so that each forked pool process gets its own
connections instead of sharing a parent's sockets.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

from flowcloud.workers.core.cache import AnswerCache
from flowcloud.workers.core.records import JobStore
from flowcloud.workers.budget import Ledger
from flowcloud.workers.core.config import get_config
from flowcloud.workers.router import Router


_calls_in_flight: int | None = None


def size_for(calls: int) -> None:
    """Size the connection pools and job threads for the calls one process makes at once (set at
    worker start, so a `--concurrency` given on the command line counts, not only the configured one)."""
    global _calls_in_flight
    _calls_in_flight = calls
    router.cache_clear()
    job_runner.cache_clear()


@functools.cache
def router() -> Router:
    config = get_config()
    return Router(config, pool_size=calls_in_flight())


@functools.cache
def job_runner() -> ThreadPoolExecutor:
    """The threads that run the jobs of bundles (``flowcloud.tasks.bundle``): as many as calls may be in flight,
    so a bundle's jobs wait on the provider side by side, never behind each other."""
    return ThreadPoolExecutor(max_workers=calls_in_flight(), thread_name_prefix="flowcloud-job")


def calls_in_flight() -> int:
    return _calls_in_flight or get_config().worker.concurrency


@functools.cache
def job_store() -> JobStore:
    return JobStore.open(get_config())


@functools.cache
def answer_cache() -> AnswerCache | None:
    """The answer cache, or None when the configuration turns it off."""
    config = get_config()
    return AnswerCache(job_store().client, config.cache.ttl) if config.cache.enabled else None


@functools.cache
def budgets() -> Ledger | None:
    """The budget ledger, or None when no budget is configured (then no job pays a round trip for it)."""
    config = get_config()
    return Ledger(job_store().client, config) if config.budgets else None
