"""A summary: a text summarized in one call, or cut into chunks summarized in parallel and merged.

A state machine driven by Celery countdowns, so it holds no worker slot while
its calls run:

    plan     clean the text and plan its calls (``plan.py``): one call when it
             fits the model's window, else overlapping chunks; queue one
             completion job per chunk (level 0 of the tree)
    wait     every 0.1-0.5 s: read the level's jobs, publish the progress
    reduce   all done: group their summaries; each group becomes one job of
             the next level, until a level holds a single job
    finish   that job's answer is the summary; usage and cost are the sums

``plan`` and ``advance`` are the two steps; each returns the ``Look`` to take
next, or None when the summary is over, and the ``summarize`` task
(``flowcloud.tasks.summarize``) turns a look into a countdown. Nothing here
sends a Celery message of its own but the children's.

The jobs it queues (its children) are ordinary ``complete`` jobs, so retries,
the answer cache, coalescing and batching come with them. Their ids are this
job's id, their level and their index: a redelivered message finds the
children it queued before instead of queueing them again. Only the first
message carries the text; the later ones carry the options and a small
``Stage``. Each child was billed when it finished, so the summary's record
shows their total cost without adding it to the spend counter again.
This module makes no provider call itself.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from flowcloud.workers.core import jobs
from flowcloud.workers.core.chunking import map_prompt, reduce_groups, reduce_prompt
from flowcloud.workers.core.jobspec import SummarizeSpec, SummaryOptions, build_spec, parse
from flowcloud.workers.core.config_sections import SummaryStrategy
from flowcloud.workers.core.records import JobRecord, JobStatus, TokenUsage
from flowcloud.workers.core.tally import Lever
from flowcloud.workers import runtime
from flowcloud.workers.core.errors import InvalidJob, JobNotFound
from flowcloud.workers.core.limits import check_summary
from flowcloud.workers.core.summary_plan import plan_summary, reduce_budget, summary_entry

log = logging.getLogger(__name__)
# How long a wait lasts: a tenth of the time the level has run so far, within these bounds.
# Short at first, because with a fast provider the chunks finish in a fraction of a second;
# longer for slow levels, whose wake-up lag then stays small against their own duration.
POLL_MIN_SECONDS = 0.1
POLL_MAX_SECONDS = 0.5
POLL_FRACTION = 0.1


class Stage(BaseModel):
    """Where a summary stands: the children queued at each level so far; the last level is awaited."""

    widths: list[int] = Field(min_length=1)  # chunk jobs first, then each reduce level's jobs
    level_started_at: float
    # The chunked plan's expected cost minus the chosen one's: the summary plan's saving, booked at the end.
    plan_saving_usd: float = 0.0

    @property
    def level(self) -> int:
        return len(self.widths) - 1


@dataclass(frozen=True)
class Look:
    """The summary goes on: its awaited level is looked at again, in a new message after a countdown."""

    options: SummaryOptions
    stage: Stage

    def next_message(self) -> dict[str, Any]:
        """That message's arguments and countdown, as Celery's ``Task.retry`` takes them."""
        return {
            "args": [self.options.model_dump(mode="json")],
            "kwargs": {"stage": self.stage.model_dump(mode="json")},
            "countdown": poll_delay(time.time() - self.stage.level_started_at),
            "argsrepr": f"summary level {self.stage.level}: {self.stage.widths[-1]} jobs "
                        f"(model={self.options.model or 'default'})",
            "kwargsrepr": "{}",
        }


def poll_delay(waited: float) -> float:
    """Seconds until the next look at a level's jobs, given how long the level has run."""
    return min(max(waited * POLL_FRACTION, POLL_MIN_SECONDS), POLL_MAX_SECONDS)


def child_ids(job_id: str, level: int, width: int) -> list[str]:
    """The ids of a summary's jobs at ``level``: stable, so a second look finds the same jobs."""
    return [f"{job_id}.{level}.{index}" for index in range(width)]


def all_child_ids(job_id: str, stage: Stage) -> list[str]:
    return [child for level, width in enumerate(stage.widths) for child in child_ids(job_id, level, width)]


def plan(job_id: str, worker: str, request: dict) -> Look | None:
    """First message: cut the text and queue the chunk jobs. Raises ``InvalidJob`` (the record failed)
    for a request that does not hold a summary."""
    store = runtime.current().store
    if not store.start(job_id, worker=worker):
        log.info("summary %s already finished or was cancelled; not planning it again", job_id)
        return None
    config = runtime.current().config
    try:
        spec = parse(SummarizeSpec, request)
        check_summary(config, spec)  # its client may not have checked
        entry = summary_entry(config, spec.model)
        chosen = plan_summary(spec.text, entry, config.summarize, max_tokens=spec.max_tokens)
        chunked = plan_summary(spec.text, entry, config.summarize, SummaryStrategy.FASTEST, spec.max_tokens)
    except InvalidJob as exc:
        store.fail(job_id, exc)
        raise
    options = spec.options()
    queue_level(job_id, options, 0, [map_prompt(chunk) for chunk in chosen.chunks])
    stage = Stage(widths=[len(chosen.chunks)], level_started_at=time.time(),
                  plan_saving_usd=max(0.0, chunked.cost_usd - chosen.cost_usd))
    log.info("summary %s planned (%s)", job_id, chosen.describe())
    return Look(options, stage) if report(job_id, worker, progress(stage, level_done=0)) else None


def advance(job_id: str, worker: str, options: SummaryOptions, stage: Stage) -> Look | None:
    """A later message: look at the awaited level; fail, wait, reduce or finish."""
    store = runtime.current().store
    ids = child_ids(job_id, stage.level, stage.widths[-1])
    children = store.get_many(ids)
    for index, child in enumerate(children):
        if child is None or child.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            fail_for_child(job_id, stage, index, child)
            return None
    done = sum(child.status is JobStatus.SUCCEEDED for child in children)
    if not report(job_id, worker, progress(stage, level_done=done)):
        return None
    if done < len(children):
        return Look(options, stage)
    if len(children) == 1:
        finish(job_id, options, stage)
        return None
    config = runtime.current().config
    budget = reduce_budget(summary_entry(config, options.model), config.summarize)
    groups = reduce_groups([child.text or "" for child in children], budget)
    queue_level(job_id, options, stage.level + 1, [reduce_prompt(group) for group in groups])
    stage = Stage(widths=[*stage.widths, len(groups)], level_started_at=time.time(),
                  plan_saving_usd=stage.plan_saving_usd)
    log.info("summary %s: level %d, %d reduce jobs queued", job_id, stage.level, len(groups))
    return Look(options, stage) if report(job_id, worker, progress(stage, level_done=0)) else None


def queue_level(job_id: str, options: SummaryOptions, level: int, prompts: list[str]) -> None:
    """One completion job per prompt; a level of one job makes the final summary."""
    settings = runtime.current().config.summarize
    final = len(prompts) == 1
    max_tokens = (options.max_tokens or settings.summary_tokens) if final else settings.summary_tokens
    specs = [build_spec(prompt, model=options.model or settings.model, flow=options.flow, max_tokens=max_tokens,
                        cache=options.cache) for prompt in prompts]
    jobs.submit_children(job_id, specs, child_ids(job_id, level, len(prompts)))


def progress(stage: Stage, level_done: int) -> dict[str, int]:
    """What ``status()`` shows, given how many jobs of the awaited level are done."""
    chunks_done = level_done if stage.level == 0 else stage.widths[0]  # past level 0 every chunk is done
    return {"chunks_done": chunks_done, "chunks_total": stage.widths[0], "depth": stage.level}


def report(job_id: str, worker: str, current: dict[str, int]) -> bool:
    """Publish progress; False when the summary must stop (cancelled, or finished by a duplicate
    message), after cancelling whatever children are still unfinished."""
    if runtime.current().store.write(job_id, {"status": JobStatus.RUNNING, "progress": current,
                                          "worker": worker, "next_attempt_at": None}):
        return True
    stopped = jobs.cancel_children(job_id)
    log.info("summary %s stopped; %d unfinished children cancelled", job_id, len(stopped))
    return False


def finish(job_id: str, options: SummaryOptions, stage: Stage) -> None:
    records = [record for record in runtime.current().store.get_many(all_child_ids(job_id, stage)) if record]
    final = records[-1]
    runtime.current().store.write(job_id, {
        "status": JobStatus.SUCCEEDED, "text": final.text, "provider": final.provider, "model": final.model,
        "flow": options.flow, "cached": all(record.cached for record in records),
        "progress": progress(stage, level_done=1), **totals(records),
        "savings_usd": {Lever.SUMMARY_PLAN.value: stage.plan_saving_usd} if stage.plan_saving_usd > 0 else None,
        "error": None, "finished_at": time.time(), "next_attempt_at": None,
    }, bill=False)
    log.info("summary %s done: %d chunks, depth %d", job_id, stage.widths[0], stage.level)


def fail_for_child(job_id: str, stage: Stage, index: int, child: JobRecord | None) -> None:
    """Fail the summary with the child's error, naming the part, and stop the other children."""
    child_id = child_ids(job_id, stage.level, stage.widths[-1])[index]
    if child is None:
        cause = JobNotFound(child_id).to_record()
    else:
        cause = child.error or {"kind": "cancelled", "message": "it was cancelled", "retryable": False}
    where = part_name(stage, index)
    records = [record for record in runtime.current().store.get_many(all_child_ids(job_id, stage)) if record]
    runtime.current().store.write(job_id, {
        "status": JobStatus.FAILED, "error": {**cause, "message": f"{where} failed: {cause['message']}",
                                              "failed_job": child_id},
        **totals(records), "finished_at": time.time(), "next_attempt_at": None,
    }, bill=False)
    cancelled = jobs.cancel_children(job_id)
    log.warning("summary %s failed: %s failed (%s); %d other jobs cancelled", job_id, where, cause["kind"],
                len(cancelled))


def part_name(stage: Stage, index: int) -> str:
    """How a person finds the failing part: ``chunk 3 of 27`` or ``part 2 of 4 of reduce level 1``."""
    if stage.level == 0:
        return f"chunk {index + 1} of {stage.widths[0]}"
    return f"part {index + 1} of {stage.widths[-1]} of reduce level {stage.level}"


def totals(records: list[JobRecord]) -> dict:
    """Usage, cost and provider calls summed over a summary's children."""
    return {
        "usage": TokenUsage(prompt_tokens=sum(r.usage.prompt_tokens for r in records),
                            completion_tokens=sum(r.usage.completion_tokens for r in records),
                            cached_tokens=sum(r.usage.cached_tokens for r in records)).model_dump(),
        "cost_usd": sum(r.cost_usd for r in records),
        "attempts": sum(r.attempts for r in records),
    }
