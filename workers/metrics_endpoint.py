"""The worker host's Prometheus endpoint: served once, by the worker's parent process,
and correct however many pool processes run the jobs.

Every process writes its values to files in one directory (prometheus_client's
multiprocess mode, the directory named by ``PROMETHEUS_MULTIPROC_DIR``, which
forked pool processes inherit); a scrape merges them. The directory belongs to one worker:
``flowcloud-metrics-<pid>`` under the temporary directory, emptied at start and
removed at exit. Directories of workers that died without cleaning up are
removed when the next worker starts. Fleet-wide values that live in Redis
(answers served at submit) or the broker (queue lengths) are read at scrape time.

Worker-side only; prometheus_client is imported when the endpoint starts.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from flowcloud.workers import metrics
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.config_routing import DeploymentConfig
from flowcloud.workers.core.queues import queue_lengths
from flowcloud.workers.core.records import CACHE_HITS_KEY
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.routing.health import Fleet

log = logging.getLogger(__name__)

DIR_PREFIX = "flowcloud-metrics-"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


@dataclass
class Endpoint:
    """The running endpoint of this worker host."""

    server: Any  # wsgiref's WSGIServer, serving in a daemon thread
    directory: Path
    owner_pid: int

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def close_in_child(self) -> None:
        """In a forked pool process: close its copy of the listening socket, so only the parent
        holds the port (a restarted worker could not bind it while an orphaned child lived)."""
        self.server.server_close()

    def stop(self) -> None:
        """Stop serving and remove the directory; only the process that started it does."""
        if os.getpid() != self.owner_pid or not self.directory.exists():
            return
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(config: Config, queues: list[str]) -> Endpoint | None:
    """Serve this host's metrics on ``metrics_address:metrics_port``; None (logged) if the port is taken.

    Call in the worker's parent before the pool forks.
    """
    directory = prepare_directory(Path(tempfile.gettempdir()))
    metrics.enable()
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    registry.register(PoolCollector(directory))
    registry.register(RedisStateCollector(config, queues, routed_deployments(config)))
    try:
        server, _ = prometheus_client.start_http_server(config.metrics_port, config.metrics_address, registry)
    except OSError as exc:
        log.error("metrics endpoint not started: %s:%d: %s (another worker on this host? give each worker "
                  "its own FLOWCLOUD_METRICS_PORT, or 0 for none)", config.metrics_address, config.metrics_port,
                  exc.strerror or exc)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    endpoint = Endpoint(server, directory, os.getpid())
    atexit.register(endpoint.stop)
    log.info("metrics on http://%s:%d/metrics", *endpoint.address)
    return endpoint


def prepare_directory(base: Path) -> Path:
    """An empty directory for this process's metric files, named into the environment; removes
    the directories of workers that are gone."""
    for stale in base.glob(DIR_PREFIX + "*"):
        pid = stale.name.removeprefix(DIR_PREFIX)
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    directory = base / f"{DIR_PREFIX}{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)  # a reused pid's leftovers
    directory.mkdir(mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def process_gone(pid: int) -> None:
    """A pool process ended: drop its live gauges (in-flight), keep its counters."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and Path(directory).is_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, directory)


class PoolCollector:
    """Merges the files of every pool process, first dropping the live gauges of processes
    that are gone without saying so (a child killed by the OS sends no shutdown signal)."""

    def __init__(self, directory: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        self.merged = MultiProcessCollector(None, str(directory))

    def collect(self) -> Any:
        for path in self.directory.glob("gauge_live*.db"):
            match = LIVE_GAUGE_FILE.match(path.name)
            if match and not pid_alive(int(match.group(1))):
                process_gone(int(match.group(1)))
        return self.merged.collect()


class RedisStateCollector:
    """Fleet-wide values read at each scrape: queue lengths (from the broker, Redis or RabbitMQ), and
    from Redis cache hits at submit and the circuit of every routed deployment."""

    def __init__(self, config: Config, queues: list[str], deployments: list[DeploymentConfig]) -> None:
        self.config = config
        self.redis_url = config.redis_url_or_embedded()
        self.queues = queues
        self.deployments = deployments

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            client = connect(self.redis_url)
            lengths = queue_lengths(self.config, self.queues, client)
            hits = client.hgetall(CACHE_HITS_KEY)
            circuits = {d: health.state for d, health in Fleet(client).healths(self.deployments).items()}
        except Exception:
            log.warning("metrics: cannot read queue lengths from the broker, or cache hits and circuits from Redis",
                        exc_info=True)
            return
        spec = metrics.QUEUE_LENGTH
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        for queue, length in sorted(lengths.items()):
            family.add_metric([queue], length)
        yield family
        spec = metrics.CACHE_HITS
        counter = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
        for flow, count in sorted(cache_hits_by_label(hits).items()):
            counter.add_metric([flow], count)
        yield counter
        spec = metrics.CIRCUIT_STATE
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
        for deployment, state in sorted(circuits.items()):
            family.add_metric([deployment], metrics.CIRCUIT_STATES[state])
        yield family


def routed_deployments(config: Config) -> list[DeploymentConfig]:
    """Every deployment of a group with a choice to make: those with a circuit."""
    chains = [group.chain for group in config.model_groups if len(group.chain) > 1]
    return list({d.id: d for chain in chains for d in chain}.values())


def cache_hits_by_label(hits: dict[str, str]) -> dict[str, int]:
    """Per-flow counts from Redis, with flow names capped like every other flow label."""
    counts: dict[str, int] = {}
    for flow, count in hits.items():
        label = metrics.flow_label(flow or None)
        counts[label] = counts.get(label, 0) + int(count)
    return counts
