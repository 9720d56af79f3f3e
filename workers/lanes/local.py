"""Where one worker process's own batched jobs meet before they go to Redis.

Jobs usually reach a worker in crowds: a bundle brings twenty at once, and a
busy queue keeps every slot full. When ``max_size`` jobs of one lane are
waiting in the same process, they make a full batch right here, and the job
that completed it makes the call for all of them: no Redis list, no flusher
lock, no mailboxes. A job not part of a full batch within a few milliseconds
goes on to its lane in Redis (``flowcloud.workers.lanes.queue``), where it meets jobs of
other processes and hosts, as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flowcloud.workers.lanes.queue import ALONE, Entry, Run, Window

# How long a job waits here for a full batch before it goes to Redis: the jobs of one crowd
# arrive within a millisecond or two of each other, and a lone job should not wait for nothing.
LOCAL_WAIT_SECONDS = 0.02


@dataclass(eq=False)
class _Waiter:
    entry: Entry
    done: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] | None = None


class LocalLanes:
    """The lanes of one process: waiting jobs by lane key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[_Waiter]] = {}

    def outcome(self, window: Window, job_id: str, text: str, run: Run) -> dict[str, Any] | None:
        """This job's outcome if it made a full batch in this process, else None: go to Redis.

        ``run`` is as for ``BatchQueue.await_outcome``. If ``run`` raises in the
        job that makes the call, the error is that job's and the others go alone.
        """
        me = _Waiter(Entry(job_id, text, reply=""))
        with self._lock:
            waiting = self._waiting.setdefault(window.key, [])
            waiting.append(me)
            full = len(waiting) >= window.max_size
            if full:  # this job completed the batch, so it is in it
                batch, waiting[:] = waiting[:window.max_size], waiting[window.max_size:]
        if full:
            self._call(batch, me, run)
            return me.outcome
        if not me.done.wait(LOCAL_WAIT_SECONDS):
            with self._lock:
                if me in waiting:  # not taken into a batch: on to Redis
                    waiting.remove(me)
                    return None
            me.done.wait()  # taken just now; its call is under way
        return me.outcome

    @staticmethod
    def _call(batch: list[_Waiter], caller: _Waiter, run: Run) -> None:
        try:
            outcomes = run([waiter.entry for waiter in batch])
        except Exception:
            for waiter in batch:  # nobody waits out a call that never comes
                if waiter is not caller:
                    waiter.outcome = ALONE
                    waiter.done.set()
            raise
        for waiter, outcome in zip(batch, outcomes):
            waiter.outcome = outcome
            waiter.done.set()
