"""The batching lane: a short prompt to a batching model shares one provider call with others.

Chooses the job's lane (``flowcloud.workers.lanes.lane``); the call then goes
through it. Jobs that do not batch keep ``job.lane`` None and make their own call.
"""

from __future__ import annotations

from flowcloud.workers.core.config import Config
from flowcloud.workers.lanes.lane import chat_lane, embedding_lane
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Outcome
from flowcloud.workers.pipeline.stage import Stage


class LaneStage(Stage):
    def __init__(self, config: Config) -> None:
        self.config = config

    def before(self, job: Job) -> Outcome | None:
        if job.is_chat:
            job.lane = chat_lane(job.spec, job.provider, job.model, self.config)
        else:  # an embedding always goes through its lane, batched or alone
            job.lane = embedding_lane(job.spec.input, job.provider, job.model, self.config)
        return None
