"""Running things: ``up`` (the whole local stack), ``worker``, ``beat``, ``flower`` and ``simulate``.

``worker``, ``beat`` and ``flower`` are the production entry points: they validate the
configuration, then hand over to Celery's own command line (extra arguments
pass straight through), so Celery applies gevent's monkey-patching itself.
"""

from __future__ import annotations

import os
import secrets
import sys
from urllib.parse import urlparse

import click

from flowcloud.workers.core.config import Config

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}
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
    from flowcloud.beat.schedule import beat_schedule, schedule_file

    beat_schedule(config)  # fail with the field's name now, not inside Celery's start-up
    config.var_dir.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-m", "celery", "-A", "flowcloud.beat.app", "beat", "--schedule", schedule_file(config),
            "--loglevel", "INFO", *extra]


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


@click.command(context_settings=PASSTHROUGH)
@click.option("--flows", is_flag=True, help="run whole Langflow flows (needs the langflow extra) instead of "
                                            "completion jobs")
@click.pass_context
def worker(ctx: click.Context, flows: bool) -> None:
    """Start a worker (extra arguments go to `celery worker`, e.g. --concurrency 500 -n w1@%h)."""
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect

    config = get_config()
    connect(config.redis_url_or_embedded())
    argv = worker_argv(config, tuple(ctx.args), flows=flows)
    os.execv(argv[0], argv)


@click.command(context_settings=PASSTHROUGH)
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Start Celery Beat: the summarization runs of `schedules:` (extra arguments go to `celery beat`).

    Run one Beat per fleet: every Beat sends every due run. It remembers when
    each entry last ran in <var_dir>/beat-schedule.
    """
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect

    config = get_config()
    argv = beat_argv(config, tuple(ctx.args))
    connect(config.redis_url_or_embedded())
    os.execv(argv[0], argv)


@click.command(context_settings=PASSTHROUGH)
@click.pass_context
def flower(ctx: click.Context) -> None:
    """Start Flower with basic auth (extra arguments go to `celery flower`).

    Its /metrics, which Flower serves without auth, answers loopback clients only
    unless flower.metrics_public is true (Prometheus on another host needs that).
    """
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect

    config = get_config()
    connect(config.redis_url_or_embedded())
    user, password, generated = flower_credentials(config)
    if generated:
        click.echo(f"Flower user {user!r}, generated password: {password}")
    argv = flower_argv(config, tuple(ctx.args))
    os.execve(argv[0], argv, flower_env(user, password))


@click.command(context_settings={**PASSTHROUGH, "help_option_names": []}, add_help_option=False)
@click.pass_context
def simulate(ctx: click.Context) -> None:
    """Run the OpenAI-compatible provider simulator (see `flowcloud simulate --help`)."""
    from flowcloud.simulator.__main__ import main as simulator_main

    raise SystemExit(simulator_main(list(ctx.args), prog="flowcloud simulate"))


@click.command()
@click.option("--demo", is_flag=True, help="summarize the bundled sample documents through the stack")
@click.option("--exit-after-demo", is_flag=True, help="stop the stack once the demo is done (for scripts)")
@click.option("--latency", type=float, default=0.4, show_default=True, help="simulator latency in seconds")
def up(demo: bool, exit_after_demo: bool, latency: float) -> None:
    """Run the whole local stack in the foreground until Ctrl-C.

    Embedded Redis (unless redis_url is set), the provider simulator (unless a
    real provider is configured), a worker, Beat (the schedules) and Flower on
    127.0.0.1:5555.
    """
    from flowcloud.cli.local_stack import run_stack

    run_stack(demo=demo or exit_after_demo, exit_after_demo=exit_after_demo, latency=latency)


def simulator_port(config: Config) -> int:
    url = urlparse(next(p.base_url for p in config.providers if p.kind == "simulator"))
    return url.port or 80


def register(cli: click.Group) -> None:
    for command in (up, worker, beat, flower, simulate):
        cli.add_command(command)
