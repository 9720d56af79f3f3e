"""Running things: ``up`` (the whole local stack), ``worker``, ``beat``, ``flower`` and ``simulate``.

``worker``, ``beat`` and ``flower`` are the production entry points: they validate the
configuration, then hand over to Celery's own command line (extra arguments
pass straight through), so Celery applies gevent's monkey-patching itself.
"""

from __future__ import annotations

import os

import click

from flowcloud.cli.processes import beat_argv, flower_argv, flower_credentials, flower_env, worker_argv

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]}


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

    Several may run, e.g. one per host: they share a lease in Redis and only its
    holder sends; when it dies another takes over after beat.lock_seconds. When
    each entry last ran is kept in Redis too, so no tick is sent twice.
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

    Embedded Redis (unless redis_url is set), the local model's llama-server on
    127.0.0.1:8080 (when `make local-model` installed it), the provider simulator
    (unless a real provider is configured), a worker, Beat (the schedules) and
    Flower on 127.0.0.1:5555.
    """
    from flowcloud.cli.local_stack import run_stack

    run_stack(demo=demo or exit_after_demo, exit_after_demo=exit_after_demo, latency=latency)


def register(cli: click.Group) -> None:
    for command in (up, worker, beat, flower, simulate):
        cli.add_command(command)
