"""The job threads of a worker process: where the jobs of bundles make their calls.

A bundle prepares only as many of its jobs as there are threads free to call
for them (``take``), so the stages that run just before a call (a rate limit's
admission above all) run when the call is about to go, not while the job still
queues for a thread behind the calls of other bundles.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class JobThreads:
    def __init__(self, size: int) -> None:
        self.size = size
        self._free = threading.BoundedSemaphore(size)
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="flowcloud-job")

    def take(self, most: int) -> int:
        """Wait until a thread is free, then take up to ``most`` free ones; returns how many were taken.
        Each is given back by ``give_back`` or by the end of a unit ``run`` on it."""
        self._free.acquire()
        taken = 1
        while taken < most and self._free.acquire(blocking=False):
            taken += 1
        return taken

    def give_back(self, count: int) -> None:
        if count > 0:
            self._free.release(count)

    def run(self, unit: Callable[..., Any], *args: Any) -> Future:
        """Run ``unit`` on a thread taken before; the thread is given back when it ends."""
        def held() -> Any:
            try:
                return unit(*args)
            finally:
                self._free.release()

        return self._pool.submit(held)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)
