"""Scheduled summarization runs on the workers: the hops of a run Beat started, and the Batch API poll.

A scheduled run is a chain of short hops of ``flowcloud.summarize_run``
(``flowcloud.tasks.runs``: the task sends the next hop ``hop`` asks for). The
first hop plans the run from the schedule in the configuration; each hop then
advances it once (collect finished summaries, submit more) and, unless it is
done, sends the next hop with a countdown. Between hops the run's state waits
in Redis, so a run over thousands of documents holds no worker slot while its
summaries are in flight. The first hop also settles how the run goes: a
schedule's ``mode: auto`` (the default) becomes ``batch_api`` or ``tasks`` by the
rule in ``flowcloud.workers.summaries.runs.mode``, and the run's spec (so its
report) keeps the choice and the reason. A ``batch_api`` run is submitted by its first hop and
then advanced by ``flowcloud.poll_batches``, which Beat sends every
``batch_api_poll_seconds``: it advances every open provider Batch API run, a
schedule's or the CLI's, then writes what came back for the schedules' runs (the
CLI writes its own). Outputs and report are those of ``flowcloud summarize``.
``flowcloud.start_batch_run`` starts the provider batch of a CLI run in
``batch_api`` mode, since only workers hold provider keys.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone

from flowcloud.workers.core.config import Schedule, get_config
from flowcloud.workers.core.errors import ConfigError, InvalidJob
from flowcloud.workers.summaries.runs.batch import start_batch, write_stored_results
from flowcloud.workers.summaries.runs.engine import RunSpec, RunState, advance, plan_run, write_report
from flowcloud.workers.summaries.runs.mode import ModeChoice, choose
from flowcloud.workers.summaries.runs.report import RunStatus
from flowcloud.workers.summaries.runs.store import RunStore

log = logging.getLogger(__name__)

HOP_SECONDS = 2.0
# How long a schedule's claim on its run outlives the last hop: a run whose hops stopped
# (a lost message) no longer blocks the schedule after this, and the next firing resumes it.
CLAIM_SECONDS = 600


def hop(schedule: str, run_id: str | None = None) -> str | None:
    """Start the schedule's run (no ``run_id``: Beat's message) or advance it once.

    Returns the run's id when its next hop is due in ``HOP_SECONDS``, else None.
    """
    store = RunStore.open(get_config())
    if run_id is None:
        run_id = start_run(schedule, store)
        if run_id is None:
            return None
    if not store.claim_hop(run_id):
        log.info("run %s: another hop is advancing it", run_id)
        return None
    try:
        state = store.load(run_id)
        if state is None:
            log.warning("run %s of schedule %s: its state has expired; the next firing resumes it", run_id, schedule)
            return None
        return run_id if advance_once(state, store) else None
    finally:
        store.release_hop(run_id)


def start_run(schedule: str, store: RunStore) -> str | None:
    """Plan the schedule's run and keep its state; None when there is nothing to start."""
    config = get_config()
    index, entry = next(((i, s) for i, s in enumerate(config.schedules) if s.name == schedule), (None, None))
    if entry is None:
        log.warning("schedule %r is not in the configuration any more; nothing to run", schedule)
        return None
    run_id = uuid.uuid4().hex
    # Claimed before planning, so a firing that finds the last run still going reads no documents.
    active = store.claim_schedule(schedule, run_id, claim_seconds(config.batch_api_poll_seconds))
    if active:
        log.info("schedule %s: run %s is still going; this firing starts nothing", schedule, active)
        return None
    try:
        choice = choose(entry, f"schedules.{index}", datetime.now(timezone.utc))
        state = plan_run(spec_for(entry, choice), run_id)
    except (InvalidJob, ConfigError) as exc:
        log.error("schedule %s: cannot start: %s", schedule, exc)
        store.release_schedule(schedule, run_id)
        return None
    spec = state.spec
    log.info("schedule %s: run %s over %d documents (%d pending) goes %s: %s", schedule, state.run_id,
             state.documents, len(state.pending), "through the Batch API" if spec.mode == "batch_api" else "as jobs",
             choice.reason)
    if spec.mode == "batch_api" and state.pending:
        start_batch(state)
        if state.in_flight:
            store.add_batch_run(state.run_id)
    store.save(state)
    return state.run_id


def advance_once(state: RunState, store: RunStore) -> bool:
    """Advance a run once, or finish it; True when a ``tasks`` run needs its next hop."""
    if state.spec.mode == "batch_api":
        finished = not state.in_flight  # Beat's poll advances batch runs
    else:
        progressed = advance(state)
        finished = state.finished
        if progressed and not finished:
            write_report(state, RunStatus.RUNNING)
    if finished:
        finish(state, store)
        return False
    store.save(state)
    store.refresh_schedule(state.spec.name, state.run_id, CLAIM_SECONDS)
    return state.spec.mode == "tasks"


def finish(state: RunState, store: RunStore) -> None:
    """Write the final report, keep the final state, and free the schedule for its next firing."""
    report = write_report(state, RunStatus.COMPLETED)
    store.save(state)
    store.release_schedule(state.spec.name, state.run_id)
    log.info("schedule %s: run %s finished: %d done, %d skipped, %d failed, $%.6f", state.spec.name,
             state.run_id, report.done, report.skipped, report.failed, report.cost_usd)


def poll_batch_runs() -> None:
    """Advance every scheduled Batch API run once: write the summaries that came back, finish those done."""
    config = get_config()
    store = RunStore.open(config)
    for run_id in store.batch_runs():
        if not store.claim_hop(run_id):
            continue
        try:
            poll_batch_run(run_id, store, claim_seconds(config.batch_api_poll_seconds))
        except Exception:  # one run's trouble must not stop the others' polls
            log.exception("batch run %s: writing its results failed; the next poll tries again", run_id)
        finally:
            store.release_hop(run_id)


def poll_batch_run(run_id: str, store: RunStore, claim_ttl: int) -> None:
    state = store.load(run_id)
    if state is None:
        store.remove_batch_run(run_id)
        return
    if write_stored_results(state):
        write_report(state, RunStatus.RUNNING)
    if state.finished:
        store.remove_batch_run(run_id)
        finish(state, store)
    else:
        store.save(state)
        store.refresh_schedule(state.spec.name, run_id, claim_ttl)


def spec_for(schedule: Schedule, choice: ModeChoice) -> RunSpec:
    """A schedule's run, going the way ``choice`` says; its cost is booked to a flow named after the
    schedule. Relative paths are relative to the worker's working directory."""
    return RunSpec(name=schedule.name, sources=[schedule.source], output=schedule.output.resolve(),
                   model=schedule.model, flow=schedule.name, mode=choice.mode, mode_reason=choice.reason)


def claim_seconds(poll_seconds: float) -> int:
    """A claim must outlive the wait between two advances, which for batch runs is Beat's poll."""
    return int(max(CLAIM_SECONDS, 3 * poll_seconds))
