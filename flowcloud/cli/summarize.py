"""``flowcloud summarize``: summarize documents into a folder, with a progress bar and a run report.

The run itself is ``flowcloud.workers.summaries.runs``; this module drives it
from the terminal: it advances the run between short waits, shows documents and
chunks as they finish, and turns the first Ctrl-C into a clean stop (jobs in
flight are cancelled, the report is written, the next run resumes). A second
Ctrl-C stops at once.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flowcloud.cli.render import console, echo_json

if TYPE_CHECKING:
    from flowcloud.workers.summaries.runs.engine import RunState
    from flowcloud.workers.summaries.runs.report import DocumentResult, RunReport

Steps = Iterator[tuple[list["DocumentResult"], str]]

# Longest pause between two steps of a run: how late a finished summary may be noticed.
STEP_WAIT_SECONDS = 0.5
FIRST_BATCH_POLL_SECONDS = 1.0
EXIT_DOCUMENTS_FAILED = 3
EXIT_INTERRUPTED = 130
PER_DOCUMENT_ROWS = 40


@click.command("summarize")
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", "-o", "out", type=click.Path(file_okay=False, path_type=Path),
              help="folder for the summaries (<name>.summary.md) and run-report.json (required unless --plan)")
@click.option("--plan", "plan_only", is_flag=True,
              help="print each document's plan (calls, tokens, cost) beside one direct call and the other "
                   "strategy; calls nothing")
@click.option("--model", "-m", default=None, help="model for the summaries (default: summarize.model, "
                                                  "else default_model)")
@click.option("--flow", default=None, help="the flow the cost is booked to")
@click.option("--mode", type=click.Choice(["tasks", "batch_api"]), default="tasks", show_default=True,
              help="tasks: summarize jobs on the workers now; batch_api: the provider's Batch API "
                   "(cheaper, answers within 24 h)")
@click.option("--max-in-flight", type=click.IntRange(1, 10_000), default=16, show_default=True,
              help="documents being summarized at once (tasks mode)")
@click.option("--ext", "extensions", multiple=True, default=(".txt", ".md"), show_default=True,
              help="file extensions taken from folders (repeat for several)")
@click.option("--no-cache", is_flag=True, help="call the provider even for text it has summarized before")
@click.option("--json", "as_json", is_flag=True, help="print the run report (or the plans) as JSON instead of tables")
def summarize_command(paths: tuple[str, ...], out: Path | None, plan_only: bool, model: str | None, flow: str | None,
                      mode: str, max_in_flight: int, extensions: tuple[str, ...], no_cache: bool,
                      as_json: bool) -> None:
    """Summarize the documents in PATHS (files, folders searched recursively, or globs) into OUT.

    Each document gets OUT/<name>.summary.md, written as soon as it is done;
    documents whose content already has a summary in OUT are skipped, so a run
    that was stopped resumes where it was. A document that cannot be read fails
    alone. Exits 0 when every document is summarized or skipped, 3 when some
    failed, 130 when stopped with Ctrl-C.

    With --plan, prints what each document would cost (its plan, one direct
    call, the other strategy) and exits 0 without calling anything.

    \b
    flowcloud summarize reports/ notes/*.md --out summaries/ --model gpt-4o-mini
    flowcloud summarize reports/ --plan
    """
    from flowcloud.workers.summaries.runs.engine import RunSpec, plan_run
    from flowcloud.workers.core.errors import InvalidJob

    if plan_only:
        from flowcloud.cli import summary_plans

        rows = summary_plans.plans(list(paths), list(extensions), model)
        if not rows:
            raise InvalidJob(f"no documents found in {', '.join(paths)} (looked for {', '.join(extensions)} files)")
        summary_plans.show(rows, as_json)
        return
    if out is None:
        raise click.UsageError("Missing option '--out' / '-o' (or give --plan to see the plans only).")
    spec = RunSpec(sources=list(paths), output=out.resolve(), model=model, flow=flow, mode=mode,
                   max_in_flight=max_in_flight, cache=not no_cache, extensions=list(extensions))
    state = plan_run(spec)
    if state.documents == 0:
        raise InvalidJob(f"no documents found in {', '.join(paths)} (looked for {', '.join(extensions)} files)")
    report = run_with_progress(state, quiet=as_json)
    if as_json:
        echo_json(report.as_dict())
    else:
        show_report(report)
    if report.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)
    if report.failed:
        sys.exit(EXIT_DOCUMENTS_FAILED)


def run_with_progress(state: RunState, quiet: bool = False) -> RunReport:
    """Advance ``state`` to its end with a progress bar; returns the written report."""
    from flowcloud.workers.summaries.runs.engine import cancel_in_flight, write_report
    from flowcloud.workers.summaries.runs.report import RunStatus

    out = console()
    stop = StopOnInterrupt()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[chunks]}"), TimeElapsedColumn())
    with stop, Progress(*columns, console=out, disable=quiet) as progress:
        bar = progress.add_task("documents", total=len(state.pending), chunks="")
        step = batch_step if state.spec.mode == "batch_api" else tasks_step
        for finished, chunks in step(state, stop):
            for result in finished:
                progress.advance(bar)
                if result.outcome == "failed" and not quiet:
                    progress.console.print(f"[red]failed[/] {escape(result.name)}: {escape(result.reason or '')}")
            progress.update(bar, chunks=chunks)
    if stop.requested and not state.finished:
        if state.spec.mode == "tasks":  # a provider batch cannot be called back; its results are dropped
            cancel_in_flight(state)
        return write_report(state, RunStatus.INTERRUPTED)
    return write_report(state, RunStatus.COMPLETED)


def tasks_step(state: RunState, stop: StopOnInterrupt) -> Steps:
    """Steps of a ``tasks`` run: (documents finished, chunk progress text) after each."""
    from flowcloud import client
    from flowcloud.workers.summaries.runs.engine import advance, chunk_progress

    while not state.finished and not stop.requested:
        finished = advance(state)
        done, total = chunk_progress(state)
        yield finished, f"chunks {done}/{total}" if total else ""
        if state.in_flight and not stop.requested:
            client.wait_all([next(iter(state.in_flight))], timeout=STEP_WAIT_SECONDS)


def batch_step(state: RunState, stop: StopOnInterrupt) -> Steps:
    """Steps of a ``batch_api`` run: hand the documents to a worker, then collect until the batch is done.

    Polls start after a second and slow down to ``batch_api_poll_seconds``: a
    simulator answers in seconds, a real provider in minutes or hours.
    """
    from flowcloud.workers.summaries.runs.batch import collect_batch, start_on_workers
    from flowcloud.workers.core.config import get_config

    yield start_on_workers(state), "batch sent"
    delay, longest = FIRST_BATCH_POLL_SECONDS, get_config().batch_api_poll_seconds
    while not state.finished and not stop.requested:
        stop.wait(delay)
        delay = min(delay * 1.5, longest)
        if not stop.requested:
            yield collect_batch(state), "waiting for the provider batch"


class StopOnInterrupt:
    """The first Ctrl-C asks the run to stop after the current step; a second one stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        click.secho("stopping after this step (Ctrl-C again to quit at once)...", fg="yellow", err=True)

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(0.1)


def show_report(report: RunReport) -> None:
    """The run report as tables: each document (for small runs), failures, and the totals."""
    out = console()
    if report.results and len(report.results) <= PER_DOCUMENT_ROWS:
        out.print(documents_table(report))
    elif report.failures:
        out.print(failures_table(report))
    out.print(totals_table(report))
    out.print(summary_line(report))


def documents_table(report: RunReport) -> Table:
    table = Table(title=f"documents ({report.output})")
    table.add_column("document", max_width=32, overflow="ellipsis", no_wrap=True)
    table.add_column("outcome", no_wrap=True)
    table.add_column("chunks", justify="right")
    table.add_column("tokens in/out", justify="right", no_wrap=True)
    table.add_column("cost $", justify="right", no_wrap=True)
    table.add_column("why", min_width=16, max_width=48, overflow="fold")
    style = {"done": "green", "skipped": "cyan", "failed": "red"}
    for result in report.results:
        outcome = result.outcome.value
        table.add_row(escape(result.name), f"[{style[outcome]}]{outcome}[/]", str(result.chunks or ""),
                      f"{result.tokens_in}/{result.tokens_out}", f"{result.cost_usd:.6f}",
                      escape(result.reason if outcome != "done" else ""))
    return table


def failures_table(report: RunReport) -> Table:
    table = Table(title="failed documents")
    table.add_column("document", max_width=40, overflow="fold")
    table.add_column("reason", overflow="fold")
    for failure in report.failures:
        table.add_row(escape(failure["document"]), escape(failure["reason"]))
    return table


def totals_table(report: RunReport) -> Table:
    table = Table(title=f"run {report.run_id[:12]} ({report.status.value})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [("documents", report.documents), ("done", report.done), ("skipped", report.skipped),
            ("failed", report.failed)]
    if report.remaining:
        rows.append(("not finished", report.remaining))
    rows += [("tokens in / out", f"{report.tokens_in} / {report.tokens_out}"), ("cost", f"${report.cost_usd:.6f}")]
    if report.mode == "batch_api":
        rows += [("at list price", f"${report.list_price_usd:.6f}"), ("saved", f"${report.saving_usd:.6f}")]
    rows += [("duration", f"{report.duration_s:.1f} s"), ("report", f"{report.output}/run-report.json")]
    for label, value in rows:
        table.add_row(label, escape(str(value)))
    return table


def summary_line(report: RunReport) -> str:
    colour = "green" if not report.failed and report.status == "completed" else "yellow"
    line = (f"[{colour}]{report.done} summarized, {report.skipped} skipped, {report.failed} failed "
            f"of {report.documents} documents in {report.duration_s:.1f} s, cost ${report.cost_usd:.6f}[/]")
    if report.status == "interrupted":
        line += f"\n[yellow]stopped: run the same command again to summarize the {report.remaining} left[/]"
    return line


def register(cli: click.Group) -> None:
    cli.add_command(summarize_command)
