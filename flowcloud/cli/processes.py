"""The command lines of the processes flowcloud starts: a worker, Beat and Flower, with what they need.

Shared by the production entry points (``flowcloud worker``, ``beat``, ``flower``)
and the local stack (``flowcloud up``), which starts them all.
"""

from __future__ import annotations

import os
import secrets
import sys
from urllib.parse import urlparse

from flowcloud.workers.core.config import Config

# Workers run flowcloud.tasks: the app with every task and the worker's signal handlers registered on it.
CELERY_WORKER = [sys.executable, "-m", "celery", "-A", "flowcloud.tasks", "worker"]


def worker_argv(config: Config, extra: tuple[str, ...] = (), flows: bool = False) -> list[str]:
    """``celery worker`` for completion jobs, or with ``flows`` for whole-flow jobs."""
    from flowcloud.workers.core.celery_app import DEFAULT_QUEUE, FLOWS_QUEUE

    settings, queue, name = ((config.flow_worker, FLOWS_QUEUE, "flows@%h") if flows
                             else (config.worker, DEFAULT_QUEUE, "flowcloud@%h"))
    return [*CELERY_WORKER, "--pool", settings.pool, "--concurrency", str(settings.concurrency),
            "--loglevel", "INFO", "--hostname", name, "--queues", queue, *extra]


def beat_argv(config: Config, extra: tuple[str, ...] = ()) -> list[str]:
    """``celery beat`` with the schedule built from ``config``; a bad cron line raises ConfigError here."""
    from flowcloud.beat.schedule import beat_schedule

    beat_schedule(config)  # fail with the field's name now, not inside Celery's start-up
    # No --schedule file: the schedule's state is in Redis, where a second Beat finds it.
    return [sys.executable, "-m", "celery", "-A", "flowcloud.beat.app", "beat", "--loglevel", "INFO", *extra]


def flower_argv(config: Config, extra: tuple[str, ...] = ()) -> list[str]:
    """``celery flower`` through flowcloud.cli.flower_app, which keeps /metrics for loopback clients
    unless ``flower.metrics_public``."""
    return [sys.executable, "-m", "flowcloud.cli.flower_app", f"--address={config.flower.address}",
            f"--port={config.flower.port}", *extra]


def flower_credentials(config: Config) -> tuple[str, str, bool]:
    """Flower's user and password, and whether the password was generated (and so must be shown).

    Taken from FLOWER_BASIC_AUTH when the environment sets it, else from the
    variable named by ``flower.password_env``, else generated.
    """
    if os.environ.get("FLOWER_BASIC_AUTH"):
        user, _, password = os.environ["FLOWER_BASIC_AUTH"].split(",")[0].partition(":")
        return user, password, False
    if config.flower.password_env and os.environ.get(config.flower.password_env):
        return config.flower.user, os.environ[config.flower.password_env], False
    return config.flower.user, secrets.token_urlsafe(12), True


def flower_env(user: str, password: str) -> dict[str, str]:
    # Through the environment, not argv, so the password does not show in `ps`.
    return {**os.environ, "FLOWER_BASIC_AUTH": f"{user}:{password}"}


def simulator_port(config: Config) -> int:
    url = urlparse(next(p.base_url for p in config.providers if p.kind == "simulator"))
    return url.port or 80
