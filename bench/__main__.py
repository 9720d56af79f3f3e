"""``python -m bench``: flowcloud throughput against raw Celery no-op tasks, or across worker pools.

Default: on one private Redis, N no-op Celery tasks, then N flowcloud jobs
against the simulator, both with the same pool and concurrency. With
``--compare-pools``: flowcloud jobs only, for each pool and concurrency given.
Exits 1 if any job failed or did not finish; the logs are then kept.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from workers.config import WorkerSettings

DESCRIPTION = "flowcloud throughput against raw Celery no-op tasks, or across worker pools."
QUICK_JOBS = 300
POOLS = ("gevent", "threads")
CONCURRENCIES = (64, 200, 500)


def build_parser() -> argparse.ArgumentParser:
    defaults = WorkerSettings()
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per measurement (default: %(default)s)")
    parser.add_argument("--latency", type=float, default=0.2,
                        help="simulator latency in seconds (default: %(default)s)")
    parser.add_argument("--pool", choices=("gevent", "threads", "prefork", "solo"), default=defaults.pool,
                        help="worker pool (default: flowcloud's, %(default)s)")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency,
                        help="worker concurrency (default: flowcloud's, %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_JOBS} jobs per measurement")
    parser.add_argument("--compare-pools", action="store_true",
                        help="measure flowcloud only, for every --pools x --concurrencies")
    parser.add_argument("--pools", default=",".join(POOLS), help="for --compare-pools (default: %(default)s)")
    parser.add_argument("--concurrencies", default=",".join(map(str, CONCURRENCIES)),
                        help="for --compare-pools (default: %(default)s)")
    parser.add_argument("--imports-only", action="store_true",
                        help="only measure what importing tasks.client costs a Langflow node")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for one measurement (default: 60 + jobs / 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    jobs = QUICK_JOBS if args.quick else args.jobs
    timeout = args.timeout or 60 + jobs / 20
    # Piped output (CI logs, tee) would otherwise be squeezed into 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 130)

    from bench import imports

    console.print(imports.describe(imports.measure()))
    if args.imports_only:
        return 0

    # Imported only now: the stack names the configuration before flowcloud reads it.
    from bench.report import show
    from bench.stack import Stack
    from bench.throughput import FlowcloudKind, NoopKind, measure

    with Stack(args.latency) as stack:
        console.print(f"private stack: Redis {stack.redis.url}, simulator {stack.simulator.url} "
                      f"at {args.latency:g} s latency; load average {_load()}")
        if args.compare_pools:
            kind = FlowcloudKind()
            results = [measure(stack, kind, jobs, pool, int(concurrency), timeout, args.workers)
                       for pool in args.pools.split(",") for concurrency in args.concurrencies.split(",")]
            show(console, f"flowcloud, {jobs} jobs, {args.latency:g} s latency, by worker pool", results)
        else:
            baseline = measure(stack, NoopKind(), jobs, args.pool, args.concurrency, timeout, args.workers)
            flowcloud = measure(stack, FlowcloudKind(), jobs, args.pool, args.concurrency, timeout, args.workers)
            results = [baseline, flowcloud]
            show(console, f"{jobs} jobs each, simulator latency {args.latency:g} s", results,
                 ratio_of=(flowcloud, baseline))
        ok = all(m.ok for m in results)
        # Other work on the machine skews the figures: say how busy it was.
        console.print(f"load average at the end {_load()} on {os.cpu_count()} CPUs")
        if ok:
            stack.remove_logs()
        else:
            console.print(f"[red]some jobs failed or never finished; logs kept in {stack.workdir}[/red]")
    return 0 if ok else 1


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
