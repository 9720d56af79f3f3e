"""Per-process worker state: the router with its pooled provider sessions, and the record store.

Built lazily on first use so that each forked pool process gets its own
connections instead of sharing a parent's sockets.
"""

from __future__ import annotations

import functools

from tasks.records import JobStore
from workers.config import get_config
from workers.router import Router


@functools.cache
def router() -> Router:
    config = get_config()
    return Router(config, pool_size=config.worker.concurrency)


@functools.cache
def job_store() -> JobStore:
    return JobStore.open(get_config())
