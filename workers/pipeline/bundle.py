"""Many jobs of one Celery message run side by side, each through the same pipeline as a job alone.

Receiving, acknowledging and reporting one message costs a Celery worker about
as much CPU as flowcloud's whole work on a provider call, so the client sends
many jobs to a message (a bundle). Here all of a bundle's jobs start on one
round trip (each marked running, its cached answer looked up), then run side by
side on the process's job threads, each with its own record, failure and
metrics. (All of them show as running from that moment; on a worker whose job
threads are all busy, some wait for one, and only then run the stages before
their call, so that a rate limit admits a job when its call goes.) Jobs that make a full batch for
one lane among themselves go as one call on one thread: the batch is there
already, so nobody waits for it to form, and it holds one thread, not one per job.
Jobs whose calls come back together end together too: on one round trip, as a group
commit (``EndTogether``).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from concurrent.futures import Future, wait
from typing import Callable

from flowcloud.workers.lanes.lane import Lanes
from flowcloud.workers.lanes.queue import ALONE, Entry
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Outcome
from flowcloud.workers.pipeline.runner import Pipeline, count_in_flight, guarded
from flowcloud.workers.pipeline.threads import JobThreads

log = logging.getLogger(__name__)
# What the caller does with a job that must run again later (a countdown of its own).
Again = Callable[[Job, Outcome], None]


class Bundle:
    def __init__(self, pipeline: Pipeline, lanes: Lanes, threads: JobThreads, again: Again) -> None:
        self.pipeline, self.lanes, self.threads, self.again = pipeline, lanes, threads, again
        self.called = EndTogether(self.end)  # how jobs end once their calls are back

    def run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` to their endings; returns once every one has ended."""
        outcomes = self.pipeline.start(jobs)
        try:
            self.end([(job, outcome) for job, outcome in zip(jobs, outcomes) if outcome is not None])
            waiting = [job for job, outcome in zip(jobs, outcomes) if outcome is None]
            running: list[Future] = []
            while waiting:
                # Prepared only when a thread is free to call: admitted by a rate limit a moment before the call.
                taken = self.threads.take(len(waiting))
                wave, waiting = waiting[:taken], waiting[taken:]
                running += self.side_by_side(self.prepared(wave))
            # Every job ends before the message is acknowledged, whatever became of the others.
            wait(running)
            self.called.end([])  # endings a writing thread left behind when something stopped it
        finally:
            count_in_flight(jobs, running=False)  # none stays counted, whatever stopped the bundle

    def prepared(self, wave: list[Job]) -> list[Job]:
        """The jobs of ``wave`` that go on to their calls; the others end here and give their threads back."""
        ready, ended = [], []
        for job in wave:
            outcome = self.pipeline.prepare(job)
            if outcome is None:
                ready.append(job)
            else:
                ended.append((job, outcome))
        self.threads.give_back(len(ended))
        self.end(ended)
        return ready

    def side_by_side(self, jobs: list[Job]) -> list[Future]:
        """``jobs``, prepared for their calls and holding a thread each, on the job threads: each full
        batch as one unit on one thread (its members give the others back), the others one a thread."""
        by_lane: dict[str, list[Job]] = defaultdict(list)
        alone: list[Job] = []
        for job in jobs:
            (by_lane[job.lane.window().key] if job.lane is not None and job.lane.batched else alone).append(job)
        running = []
        for members in by_lane.values():
            size = members[0].lane.max_size
            whole = len(members) - len(members) % size
            for first in range(0, whole, size):
                self.threads.give_back(size - 1)
                running.append(self.threads.run(self.call_batch, members[first:first + size]))
            alone += members[whole:]
        return running + [self.threads.run(self.call_alone, job) for job in alone]

    def call_alone(self, job: Job) -> None:
        self.called.end([(job, self.pipeline.reviewed(job, guarded(job, self.pipeline.call, job)))])

    def call_batch(self, members: list[Job]) -> None:
        """One provider call for a full batch, then each job ended with its own outcome."""
        lane = members[0].lane
        try:
            results = self.lanes.run_batch(lane, [Entry(job.id, job.text, reply="") for job in members])
        except Exception:
            log.exception("a batch of %d jobs for %s broke: each goes alone", len(members), lane.model)
            results = [ALONE] * len(members)
        self.called.end([(job, self.pipeline.reviewed(job, guarded(job, self.pipeline.call.from_batch, job, result)))
                         for job, result in zip(members, results)])

    def end(self, ended: list[tuple[Job, Outcome]]) -> None:
        """End ``ended`` and send on those that run again. Never raises: on a job thread, nobody would see it."""
        if not ended:
            return
        try:
            self.pipeline.end(ended)
            for job, outcome in ended:
                if outcome.ending.later:
                    unsent = guarded(job, self.again, job, outcome)
                    if unsent is not None:  # not sent on: it fails now rather than wait for a message never sent
                        self.pipeline.end([(job, unsent)])
        except Exception:  # Redis gone: the records stay as they were, and the message comes back
            log.exception("ending %d jobs of a bundle failed", len(ended))


class EndTogether:
    """Group commit of endings: jobs that end while another thread writes the endings before theirs are
    written together next, by that thread. A bundle's calls go out together and come back close together,
    so they end on a few round trips instead of one each; an ending waits at most for the write under way.

    The thread that writes goes on until none is left, so once every job thread of a bundle has
    returned, every ending is written (``Bundle.run`` waits for those threads before the ack)."""

    def __init__(self, end: Callable[[list[tuple[Job, Outcome]]], None]) -> None:
        self._end = end
        self._lock = threading.Lock()
        self._pending: list[tuple[Job, Outcome]] = []
        self._writing = False

    def end(self, ended: list[tuple[Job, Outcome]]) -> None:
        with self._lock:
            self._pending += ended
            if self._writing:
                return  # the writing thread takes these on its next round
            self._writing = True
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._writing = False
                    return
            try:
                self._end(batch)  # Bundle.end raises no Exception; a shutdown may still stop it here
            except BaseException:
                with self._lock:
                    self._writing = False  # what is left is written by the next ending, or by Bundle.run
                raise

