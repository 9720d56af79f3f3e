"""The job pipeline: an ordered list of stages around the provider call (``stage.py`` says how a
stage is called; ``stages/`` holds them; ``runner.py`` runs a job through them)."""

from flowcloud.workers.pipeline.call import Call
from flowcloud.workers.pipeline.job import CHAT, EMBEDDING, Job, Kind
from flowcloud.workers.pipeline.outcome import Ending, Outcome
from flowcloud.workers.pipeline.runner import Pipeline
from flowcloud.workers.pipeline.stage import Stage
from flowcloud.workers.pipeline.stages import default_stages

__all__ = ["CHAT", "EMBEDDING", "Call", "Ending", "Job", "Kind", "Outcome", "Pipeline", "Stage", "default_stages"]
