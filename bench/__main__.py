"""``python -m bench`` (``make bench``): flowcloud's benchmarks, each against a baseline measured in the same run.

Starts a private Redis and provider simulator, runs the selected benchmarks on
them one after another (each starts and stops its own workers), prints one
table per benchmark and a summary, and after a full run of all of them rewrites
``docs/benchmarks.md`` and its chart. ``--compare-pools`` instead measures
flowcloud's throughput across worker pools. Exits 1 if any job failed, never
finished or a benchmark could not run; the logs are then kept.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext

from rich.console import Console

from bench.options import DEFAULT_LATENCY, Options
from bench.suite import BENCHMARKS, NAMES, select
from bench.throughput import THROUGHPUT_CONCURRENCY

POOLS = ("gevent", "threads")
CONCURRENCIES = (64, 200, 500)
EPILOG = "benchmarks, in run order:\n" + "\n".join(f"  {b.name:<14}{b.summary}" for b in BENCHMARKS) + """

examples:
  python -m bench                            all of them; rewrites docs/benchmarks.md (about 4 minutes)
  python -m bench --only latency,batching    two of them, figures printed only
  python -m bench --quick                    a smoke run of all, scaled down (about 2 minutes)
  python -m bench --compare-pools --pools threads --concurrencies 100,500
"""


def build_parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="flowcloud's benchmarks on a private Redis, simulator and workers; every figure beside a "
                    "baseline measured in the same run.")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated benchmarks to run ({','.join(NAMES)})")
    parser.add_argument("--quick", action="store_true", help="smoke run: every benchmark scaled down")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help="rewrite docs/benchmarks.md and docs/img/benchmarks.png (default: only after a "
                             "full run of every benchmark)")
    parser.add_argument("--latency", type=float, default=DEFAULT_LATENCY,
                        help="simulator latency in seconds for throughput, latency, batching and coalescing "
                             "(capacity uses 10 s, summarization 1 s; default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=None, help="throughput jobs per measurement (default: 5000)")
    parser.add_argument("--pool", choices=("gevent", "threads", "prefork", "solo"), default=defaults.pool,
                        help="worker pool (default: flowcloud's, %(default)s)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help=f"worker concurrency, except capacity's (default: flowcloud's, {defaults.slots()}; "
                             f"throughput's, {THROUGHPUT_CONCURRENCY})")
    parser.add_argument("--workers", type=int, default=1, help="throughput worker processes (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for one throughput measurement (default: 60 + jobs / 20)")
    parser.add_argument("--compare-pools", action="store_true",
                        help="measure flowcloud throughput only, for every --pools x --concurrencies")
    parser.add_argument("--pools", default=",".join(POOLS), help="for --compare-pools (default: %(default)s)")
    parser.add_argument("--concurrencies", default=",".join(map(str, CONCURRENCIES)),
                        help="for --compare-pools (default: %(default)s)")
    parser.add_argument("--imports-only", action="store_true",
                        help="only measure what importing flowcloud.client costs a Langflow node")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        benchmarks = select("imports" if args.imports_only else args.only)
    except ValueError as exc:
        parser.error(str(exc))
    options = Options(quick=args.quick, latency=args.latency, pool=args.pool, concurrency=args.concurrency,
                      workers=args.workers, jobs=args.jobs, timeout=args.timeout)
    # Piped output (CI logs, tee) would otherwise be squeezed into 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 130)
    if args.compare_pools:
        return compare_pools(console, args, options)
    write_docs = args.docs if args.docs is not None else (not args.quick and len(benchmarks) == len(BENCHMARKS))
    return run_benchmarks(console, benchmarks, options, write_docs, argv)


def run_benchmarks(console: Console, benchmarks: list, options: Options, write_docs: bool,
                   argv: list[str] | None) -> int:
    # Imported only now: the stack names the configuration before flowcloud reads it.
    from bench.report import show_outcome, summary_table
    from bench.stack import Stack
    from bench.suite import run_all

    load_at_start = _load()
    needs_stack = any(b.needs_stack for b in benchmarks)
    with Stack(options.latency) if needs_stack else nullcontext() as stack:
        if stack is not None:
            console.print(f"private stack: Redis {stack.redis.url}, simulator {stack.simulator.url}; "
                          f"load average {load_at_start} on {os.cpu_count()} CPUs\n")
        outcomes = run_all(benchmarks, stack, options, lambda outcome: show_outcome(console, outcome))
        ok = all(outcome.ok for outcome in outcomes)
        if stack is not None and ok:
            stack.remove_logs()
        elif stack is not None:
            console.print(f"[red]some jobs failed, never finished or a benchmark broke; logs kept in "
                          f"{stack.workdir}[/red]")
    console.print(summary_table(outcomes))
    load_at_end = _load()
    # Other work on the machine skews the figures: say how busy it was.
    console.print(f"load average {load_at_start} at the start, {load_at_end} at the end, on {os.cpu_count()} CPUs")
    if write_docs:
        from bench import docs

        command = "python -m bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
        console.print(f"wrote {docs.write(outcomes, command, (load_at_start, load_at_end))}")
    return 0 if ok else 1


def compare_pools(console: Console, args: argparse.Namespace, options: Options) -> int:
    """flowcloud throughput for every pool and concurrency given, on one private stack."""
    from bench.report import show
    from bench.stack import Stack
    from bench.throughput import FULL_JOBS, QUICK_JOBS, FlowcloudKind, measure

    jobs = options.jobs or options.pick(FULL_JOBS, QUICK_JOBS)
    timeout = options.timeout or 60 + jobs / 20
    with Stack(options.latency) as stack:
        # A new kind per measurement: each queues prompts of its own, never answered from the cache.
        results = [measure(stack, FlowcloudKind(), jobs, pool, int(concurrency), timeout, options.workers)
                   for pool in args.pools.split(",") for concurrency in args.concurrencies.split(",")]
        show(console, f"flowcloud, {jobs} jobs, {options.latency:g} s latency, by worker pool", results)
        ok = all(m.ok for m in results)
        if ok:
            stack.remove_logs()
        else:
            console.print(f"[red]some jobs failed or never finished; logs kept in {stack.workdir}[/red]")
    console.print(f"load average at the end {_load()} on {os.cpu_count()} CPUs")
    return 0 if ok else 1


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
