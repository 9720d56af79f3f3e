"""The settings every benchmark reads, gathered from the command line once."""

from __future__ import annotations

from dataclasses import dataclass

from flowcloud.workers.core.config import WorkerSettings

DEFAULT_LATENCY = 0.2
_WORKER_DEFAULTS = WorkerSettings()


@dataclass(frozen=True)
class Options:
    """What to run and how hard; each benchmark scales itself down when ``quick``."""

    quick: bool = False
    latency: float = DEFAULT_LATENCY  # simulator latency, seconds, where a benchmark does not fix its own
    pool: str = _WORKER_DEFAULTS.pool
    concurrency: int | None = None  # worker concurrency; None: each benchmark's own (``slots``)
    workers: int = 1  # worker processes, for the throughput benchmark
    jobs: int | None = None  # throughput jobs per measurement; None: the benchmark's own default
    timeout: float | None = None  # seconds to wait for one measurement; None: the benchmark's own

    def slots(self, default: int = _WORKER_DEFAULTS.concurrency) -> int:
        """The worker concurrency to run with: the one asked for, else ``default`` (flowcloud's own)."""
        return self.concurrency or default

    def pick(self, full: int, quick: int) -> int:
        """``full`` for a real run, ``quick`` for a smoke run."""
        return quick if self.quick else full
