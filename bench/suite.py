"""The benchmarks ``python -m bench`` knows, in the order it runs them, and the loop that runs them.

Each benchmark is a module with ``run(stack, options) -> Outcome``. They share
one private stack; between two benchmarks its Redis forgets the last one's
records and answers, and the simulator its counts, so no figure leaks into the
next. A benchmark that breaks is reported as a problem and the others still run.
"""

from __future__ import annotations

import importlib
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from bench.options import Options
from bench.results import Outcome


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str  # one line, for --help
    module: str  # defines run(stack, options) -> Outcome
    needs_stack: bool = True

    def run(self, stack, options: Options) -> Outcome:
        return importlib.import_module(self.module).run(stack, options)


BENCHMARKS = (
    Benchmark("imports", "CPU time to import flowcloud.client, against lfx's Component", "bench.imports",
              needs_stack=False),
    Benchmark("throughput", "5,000 jobs at 200 ms, against raw Celery no-op tasks", "bench.throughput"),
    Benchmark("latency", "added latency p50/p99 at 50 jobs/s, against a raw Celery task making the same call",
              "bench.latency"),
    Benchmark("capacity", "calls one worker process holds at 10 s latency, and its memory against idle",
              "bench.capacity"),
    Benchmark("batching", "provider calls and wall time for 1,000 short prompts, against batching off",
              "bench.batching"),
    Benchmark("coalescing", "provider calls for 100 identical prompts, against cache=False", "bench.coalescing"),
    Benchmark("summarization", "wall time for a 200 KB document, against (tree depth + 1) x latency",
              "bench.summarization"),
    Benchmark("cost", "spend on a standard mixed workload, against each item once as a direct call at list price",
              "bench.cost"),
)
NAMES = tuple(b.name for b in BENCHMARKS)


def select(only: str | None) -> list[Benchmark]:
    """The benchmarks named in a comma-separated ``only`` (all when None), in run order."""
    if not only:
        return list(BENCHMARKS)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(wanted - set(NAMES))
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    return [b for b in BENCHMARKS if b.name in wanted]


def run_all(benchmarks: list[Benchmark], stack, options: Options,
            shown: Callable[[Outcome], None]) -> list[Outcome]:
    """Run each benchmark on ``stack`` and pass its outcome to ``shown`` as soon as it is known."""
    outcomes = []
    for benchmark in benchmarks:
        if stack is not None:
            stack.flush()
        started = time.monotonic()
        try:
            outcome = benchmark.run(stack, options)
        except Exception as exc:  # one broken benchmark must not cost the figures of the others
            outcome = Outcome(benchmark.name, benchmark.summary, subject="flowcloud", baseline="-",
                              problems=[f"could not run: {type(exc).__name__}: {exc}"])
            traceback.print_exc()
        outcome.seconds = time.monotonic() - started
        shown(outcome)
        outcomes.append(outcome)
    return outcomes
