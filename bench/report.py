"""The tables the bench prints: one per benchmark (each figure beside its baseline and target), and
the detailed throughput table of ``--compare-pools`` (one row per measurement)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bench.results import Figure, Outcome, format_number, format_ratio
from bench.throughput import Measurement

MB = 1024 * 1024


def _per_job_ms(seconds: float, m: Measurement) -> str:
    return f"{seconds * 1000 / m.finished:.2f}" if m.finished else "-"


def table(title: str, measurements: list[Measurement]) -> Table:
    out = Table(title=title)
    for header in ("run", "pool", "procs", "conc", "jobs", "not ok", "enqueue\n/s", "jobs/s", "worker CPU\nms/job",
                   "Redis CPU\nms/job", "worker RSS MB\nidle / peak", "sim max\nin flight"):
        out.add_column(header, justify="left" if header in ("run", "pool") else "right")
    for m in measurements:
        not_ok = m.failed + (m.jobs - m.finished)
        out.add_row(
            m.name, m.pool, str(m.processes), str(m.concurrency), str(m.jobs),
            f"[red]{not_ok}[/red]" if not_ok else "0",
            f"{m.enqueue_per_s:.0f}", f"[bold]{m.jobs_per_s:.1f}[/bold]",
            _per_job_ms(m.worker_cpu, m), _per_job_ms(m.redis_cpu, m),
            f"{m.rss_idle / MB:.0f} / {m.rss_peak / MB:.0f}",
            "-" if m.max_in_flight is None else str(m.max_in_flight),
        )
    return out


def show(console: Console, title: str, measurements: list[Measurement], ratio_of: tuple | None = None) -> None:
    console.print(table(title, measurements))
    if ratio_of:
        flowcloud, baseline = ratio_of
        ratio = flowcloud.jobs_per_s / baseline.jobs_per_s if baseline.jobs_per_s else float("nan")
        console.print(f"flowcloud / baseline: [bold]{ratio:.2f}[/bold] "
                      f"({flowcloud.jobs_per_s:.1f} vs {baseline.jobs_per_s:.1f} jobs/s)")
    for m in measurements:
        if m.first_error:
            console.print(f"[red]{m.name} {m.pool}/{m.concurrency}: first failure {m.first_error}[/red]")
        if m.finished < m.jobs:
            console.print(f"[red]{m.name} {m.pool}/{m.concurrency}: {m.jobs - m.finished} job(s) never finished "
                          "(see the worker log)[/red]")


def verdict(figure: Figure) -> str:
    """Whether ``figure`` met its target, in words a table can show."""
    return {True: "met", False: "MISSED", None: "-"}[figure.met]


def outcome_table(outcome: Outcome) -> Table:
    """One benchmark's figures: value, baseline, ratio, target and whether it was met."""
    out = Table(title=f"[bold]{outcome.name}[/bold]: {outcome.title}", title_justify="left")
    out.add_column("figure")
    out.add_column(f"{outcome.subject}", justify="right")
    out.add_column(f"baseline:\n{outcome.baseline}", justify="right")
    out.add_column("ratio", justify="right")
    out.add_column("target", justify="right")
    out.add_column("", justify="left")
    for figure in outcome.figures:
        style = {True: "green", False: "red", None: ""}[figure.met]
        out.add_row(
            f"{figure.label} ({figure.unit})", f"[bold]{format_number(figure.value)}[/bold]",
            format_number(figure.baseline), format_ratio(figure.ratio),
            figure.target.describe(figure.unit) if figure.target else "",
            f"[{style}]{verdict(figure)}[/{style}]" if style else verdict(figure),
        )
    return out


def show_outcome(console: Console, outcome: Outcome) -> None:
    """Print one benchmark's table, its notes and any jobs that went wrong."""
    console.print(outcome_table(outcome))
    for note in outcome.notes:
        console.print(f"  {note}")
    for problem in outcome.problems:
        console.print(f"  [red]{problem}[/red]")
    console.print(f"  took {outcome.seconds:.0f} s\n")


def summary_table(outcomes: list[Outcome]) -> Table:
    """Every benchmark's headline figures in one table, for the end of a run."""
    out = Table(title="[bold]summary[/bold]: flowcloud against baselines measured in this run", title_justify="left")
    for header in ("benchmark", "figure", "flowcloud", "baseline", "ratio", "target", ""):
        out.add_column(header, justify="left" if header in ("benchmark", "figure", "") else "right")
    for outcome in outcomes:
        for figure in (f for f in outcome.figures if f.plot):
            out.add_row(outcome.name, f"{figure.label} ({figure.unit})", format_number(figure.value),
                        format_number(figure.baseline), format_ratio(figure.ratio),
                        figure.target.describe(figure.unit) if figure.target else "", verdict(figure))
    return out
