"""The tables the bench prints: one row per measurement, then the flowcloud/baseline ratio."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

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
