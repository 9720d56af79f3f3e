"""Masking of personal data before a prompt leaves for a cloud, and its restoring in the answer.

In ``before``, a job of a covered flow whose provider is a cloud (``cloud: true``,
the default) has its prompt, or the text it embeds, masked
(``flowcloud.workers.core.masking``); the mapping stays on the job, in this
process, and never goes to Redis. Masking fails closed: if it fails, the job
fails with ``masking_failed`` before its call. With ``mask.restore`` the
``review`` puts the originals back into a chat answer before the record and the
cache see it.
"""

from __future__ import annotations

from dataclasses import replace

from flowcloud.workers import metrics
from flowcloud.workers.core.config_sections import MaskSettings
from flowcloud.workers.core.errors import MaskingFailed
from flowcloud.workers.core.masking import mask_spec, masker_for
from flowcloud.workers.pipeline.job import Job
from flowcloud.workers.pipeline.outcome import Ending, Outcome
from flowcloud.workers.pipeline.stage import Stage


class MaskStage(Stage):
    def __init__(self, settings: MaskSettings) -> None:
        self.settings = settings
        self.masker = masker_for(settings)  # a detector that cannot be imported: ConfigError, no pipeline

    def before(self, job: Job) -> Outcome | None:
        if not (self.settings.covers(job.flow) and job.provider.config.cloud):
            return None
        try:
            job.spec, job.placeholders = mask_spec(job.spec, self.masker)
        except MaskingFailed as exc:
            return Outcome.failed(exc)
        metrics.record_masked(job.placeholders.counts)
        return None

    def review(self, job: Job, outcome: Outcome) -> Outcome | None:
        if not (self.settings.restore and job.placeholders and outcome.ending is Ending.SUCCEEDED
                and isinstance(outcome.answer.value, str)):
            return None
        restored = job.placeholders.restore(outcome.answer.value)
        return replace(outcome, answer=replace(outcome.answer, value=restored))
