"""The private stack a benchmark runs on: Redis on a free port, the provider simulator and Celery workers.

Every process is a child of the bench, started in its own session and stopped
by its own pid, so a stack that ``flowcloud up`` runs beside it is never touched.
The configuration file is written here and named in ``FLOWCLOUD_CONFIG`` before
any flowcloud module reads it.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from flowcloud.workers.core.embedded_redis import RedisServer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
# A model served through the legacy completions endpoint, whose list of prompts is a real batched call.
BATCH_MODEL = "gpt-3.5-turbo-instruct"
START_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 20.0
CONTROL_TIMEOUT = 10.0  # a busy machine can take a while to answer; all replies end the wait early
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_data(redis_url: str, simulator_url: str) -> dict:
    """The stack's configuration; each worker gets its pool and concurrency from the environment."""
    return {
        "redis_url": redis_url,
        # Metrics stay on, as deployed, on a port of the stack's own: never one a running fleet holds.
        "metrics_port": free_port(),
        "providers": [{
            "name": "sim",
            "kind": "openai",
            "base_url": simulator_url,
            "allow_private": True,  # the simulator on 127.0.0.1
            "models": [
                {"name": MODEL, "input_per_mtok": 0.15, "output_per_mtok": 0.60},
                {"name": BATCH_MODEL, "input_per_mtok": 1.50, "output_per_mtok": 2.00, "batch": "completions"},
            ],
        }],
    }


class Simulator:
    """``python -m flowcloud.simulator`` on a free port, read back from its listening line."""

    def __init__(self, latency: float, log_path: Path) -> None:
        self.latency_at_start = latency
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Simulator:
        argv = [sys.executable, "-m", "flowcloud.simulator", "--port", "0", "--latency", str(self.latency_at_start)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                                            cwd=PROJECT_ROOT, start_new_session=True)
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                raise RuntimeError(f"simulator printed nothing within {START_TIMEOUT:g} s; see {self.log_path}")
        line = self.process.stdout.readline().strip()
        if not line.startswith("simulator listening on "):
            raise RuntimeError(f"simulator did not start ({line!r}); see {self.log_path}")
        self.url = line.removeprefix("simulator listening on ")
        return self

    def _control(self, method: str, path: str, body: dict | None = None) -> dict:
        root = self.url.removesuffix("/v1")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(root + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def stats(self) -> dict:
        """Counters since the last reset: ``total``, ``by_endpoint``, ``in_flight``, ``max_in_flight``."""
        return self._control("GET", "/_sim/stats")

    def reset(self) -> None:
        self._control("POST", "/_sim/reset")

    def arrivals(self, limit: int) -> list[float]:
        """When the last ``limit`` answered requests arrived (epoch seconds), earliest first."""
        return sorted(entry["t"] for entry in self._control("GET", f"/_sim/requests?limit={limit}"))

    def calls(self) -> int:
        """API requests answered since the last reset."""
        return self.stats()["total"]

    @contextmanager
    def latency(self, seconds: float) -> Iterator[None]:
        """Answer after ``seconds`` inside the block, then go back to the latency the stack started with."""
        self._control("POST", "/_sim/config", {"latency": seconds})
        try:
            yield
        finally:
            self._control("POST", "/_sim/config", {"latency": self.latency_at_start})

    @contextmanager
    def batches_after(self, seconds: float) -> Iterator[None]:
        """Complete Batch API batches ``seconds`` after they are created inside the block."""
        before = self._control("GET", "/_sim/config")["batch_delay"]
        self._control("POST", "/_sim/config", {"batch_delay": seconds})
        try:
            yield
        finally:
            self._control("POST", "/_sim/config", {"batch_delay": before})

    def stop(self) -> None:
        stop_process(self.process)


class Worker:
    """One ``celery worker`` process serving ``queue`` with the given pool and concurrency."""

    def __init__(self, app_module: str, queue: str, pool: str, concurrency: int, env: dict, log_path: Path,
                 index: int = 1) -> None:
        self.app_module, self.queue, self.pool, self.concurrency = app_module, queue, pool, concurrency
        self.hostname = f"bench{index}-{pool}-{concurrency}-{os.getpid()}@{socket.gethostname()}"
        # The adapter's HTTP pool is sized from the configured concurrency: keep the two equal.
        self.env = {**env, "FLOWCLOUD_WORKER__POOL": pool, "FLOWCLOUD_WORKER__CONCURRENCY": str(concurrency)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.app_module, "worker", "--pool", self.pool,
                "--concurrency", str(self.concurrency), "--loglevel", "WARNING",
                "--hostname", self.hostname, "--queues", self.queue]

    def start(self, app) -> Worker:
        """Start the worker and wait until it answers a ping sent through ``app``."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=PROJECT_ROOT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not app.control.ping(destination=[self.hostname], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {self.hostname} did not start; see {self.log_path}")
        return self

    def rss_bytes(self) -> int:
        """Resident memory of the worker and its pool processes (prefork's children)."""
        return sum(_status_kb(pid, "VmRSS") * 1024 for pid in self._pids())

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self._pids())

    def _pids(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *_children(self.process.pid)]

    def stop(self) -> None:
        stop_process(self.process)


class Workers(list):
    """The worker processes of one measurement, measured together."""

    def rss_bytes(self) -> int:
        return sum(worker.rss_bytes() for worker in self)

    def cpu_seconds(self) -> float:
        return sum(worker.cpu_seconds() for worker in self)

    def stop(self) -> None:
        for worker in self:
            worker.stop()

    @contextmanager
    def paused(self, app, queue: str) -> Iterator[None]:
        """Inside the block the workers take nothing from ``queue``; leaving it, they find every job queued
        meanwhile at once. Jobs submitted in the block thus reach the workers together, however slowly
        this machine's client queued them."""
        destination = [worker.hostname for worker in self]
        replies = app.control.cancel_consumer(queue, destination=destination, reply=True, timeout=CONTROL_TIMEOUT)
        if len(replies) < len(destination):
            raise RuntimeError(f"only {len(replies)} of {len(destination)} workers stopped consuming {queue}")
        try:
            yield
        finally:
            app.control.add_consumer(queue, destination=destination, reply=True, timeout=CONTROL_TIMEOUT)


class Stack:
    """Private Redis and simulator for the whole bench run; workers come and go per measurement."""

    def __init__(self, latency: float) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="flowcloud-bench-"))
        self.redis = RedisServer(self.workdir / "redis", port=free_port())
        self.simulator = Simulator(latency, self.workdir / "simulator.log")
        self.env: dict[str, str] = {}

    def start(self) -> Stack:
        raise_file_limit()  # inherited by every process the stack starts
        self.redis.start()
        self.simulator.start()
        config_file = self.workdir / "flowcloud.yaml"
        config_file.write_text(yaml.safe_dump(config_data(self.redis.url, self.simulator.url), sort_keys=False))
        # Set before flowcloud reads its configuration; the environment wins over any file, so pin both.
        os.environ["FLOWCLOUD_CONFIG"] = str(config_file)
        os.environ["FLOWCLOUD_REDIS_URL"] = self.redis.url
        self.env = dict(os.environ)
        return self

    @contextmanager
    def workers(self, app, app_module: str, queue: str, pool: str, concurrency: int,
                count: int = 1, env: dict[str, str] | None = None) -> Iterator[Workers]:
        """``count`` worker processes, stopped on leaving the block; ``env`` adds to the stack's environment."""
        workers = Workers()
        try:
            for index in range(1, count + 1):
                log_path = self.workdir / f"worker{index}-{app_module}-{pool}-{concurrency}.log"
                worker = Worker(app_module, queue, pool, concurrency, {**self.env, **(env or {})}, log_path, index)
                workers.append(worker.start(app))
            yield workers
        finally:
            workers.stop()

    def flush(self) -> None:
        """Forget the last benchmark's records, cached answers and results, and the simulator's counts.

        Kombu's queue bindings stay: a client that declared a queue once never declares it again.
        """
        client = self.redis.client()
        for pattern in ("flowcloud:*", "celery-task-meta-*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 1000):
                client.unlink(*keys[start:start + 1000])
        self.simulator.reset()

    def redis_cpu_seconds(self) -> float:
        return process_cpu_seconds(self.redis.process.pid)

    def stop(self) -> None:
        self.simulator.stop()
        self.redis.stop()

    def remove_logs(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL to the process's own group after a grace period."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only its pool children share the group
        process.wait()


def raise_file_limit() -> None:
    """Let this process and its children open as many sockets as the system allows: thousands of calls
    in flight need them."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
