"""A worker process's state, in one object: its configuration, the router with its pooled provider
connections, the stores, the lanes, the job threads and the job pipeline.

Built on first use in each process (``current``), so every forked pool process
gets its own connections instead of sharing a parent's sockets. The worker's
start sizes it (``size_for``) before any is built; tests build their own with
``Runtime.build`` and put it in place with ``install``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flowcloud.workers.budget import Ledger
from flowcloud.workers.core.cache import AnswerCache
from flowcloud.workers.core.config import Config, get_config
from flowcloud.workers.core.records import JobStore
from flowcloud.workers.lanes.lane import Lanes
from flowcloud.workers.pipeline import Call, Pipeline, default_stages
from flowcloud.workers.pipeline.threads import JobThreads
from flowcloud.workers.providers import http
from flowcloud.workers.rate_limits import Limiter
from flowcloud.workers.routing.router import Router


@dataclass
class Runtime:
    """Everything a worker process builds once and every job shares."""

    config: Config
    router: Router
    store: JobStore
    cache: AnswerCache | None  # None when the configuration turns the cache off
    budgets: Ledger | None  # None when no budget is configured: then no job pays a round trip for one
    lanes: Lanes
    # The threads that run the jobs of bundles: as many as calls may be in flight, so a bundle's
    # jobs wait on the provider side by side, never behind each other.
    job_threads: JobThreads
    pipeline: Pipeline
    limiter: Limiter | None = None  # None when no deployment has an rpm or tpm

    @classmethod
    def build(cls, config: Config, calls_in_flight: int | None = None) -> Runtime:
        calls = calls_in_flight or config.worker.concurrency
        store = JobStore.open(config)
        cache = AnswerCache(store.client, config.cache.ttl) if config.cache.enabled else None
        budgets = Ledger(store.client, config) if config.budgets else None
        router = Router(config, pool_size=calls, client=store.client)
        lanes = Lanes(store)
        limiter = Limiter.for_config(store.client, config)
        if limiter is not None:  # what the providers say of their own limits tightens ours
            http.headers_observer = limiter.observe
        pipeline = Pipeline(default_stages(config, store, cache, budgets, router, limiter),
                            Call(lanes, config.retry), store, config, router)
        return cls(config, router, store, cache, budgets, lanes,
                   JobThreads(calls), pipeline, limiter)

    def close(self) -> None:
        """Release pooled connections and the job threads."""
        self.router.close()
        self.job_threads.shutdown()
        if self.limiter is not None and http.headers_observer == self.limiter.observe:
            http.headers_observer = None


_lock = threading.Lock()
_current: Runtime | None = None
_calls_in_flight: int | None = None


def current() -> Runtime:
    """This process's runtime, built on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = Runtime.build(get_config(), _calls_in_flight)
    return _current


def size_for(calls: int) -> None:
    """Size the connection pools and job threads for the calls one process makes at once. Set at
    worker start, so a ``--concurrency`` given on the command line counts, not only the configured one."""
    global _calls_in_flight
    _calls_in_flight = calls
    install(None)


def install(runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` this process's (None: build one again on next use); returns the one it replaces."""
    global _current
    with _lock:
        replaced, _current = _current, runtime
    return replaced


def close() -> None:
    """Close this process's runtime, if one was built."""
    replaced = install(None)
    if replaced is not None:
        replaced.close()

