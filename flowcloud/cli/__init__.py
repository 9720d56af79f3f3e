"""The ``flowcloud`` command line.

Each command imports what it needs when it runs, so ``flowcloud --help`` and the
job commands start fast and never load the worker or Langflow.
"""

from __future__ import annotations

import sys

import click

from flowcloud.workers.core.errors import ConfigError, FlowcloudError


class Main(click.Group):
    """Turns flowcloud errors into one clear line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.secho(f"configuration error: {exc}", fg="red", err=True)
            sys.exit(2)
        except FlowcloudError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flowcloud")
def cli() -> None:
    """flowcloud: run Langflow's cloud AI calls on a Celery worker fleet.

    Jobs go through Redis to workers that call OpenAI-compatible providers with
    pooled connections, timeouts and retries that honour Retry-After.
    Configuration: ./flowcloud.yaml or $FLOWCLOUD_CONFIG (see `flowcloud config check`).
    """


def build() -> click.Group:
    """The ``flowcloud`` group with every command registered: what ``main`` runs, and what a check of
    a command line (tests/test_compose.py) parses with."""
    from flowcloud.cli import ab
    from flowcloud.cli import alerts
    from flowcloud.cli import budgets
    from flowcloud.cli import config_cmd
    from flowcloud.cli import costs
    from flowcloud.cli import flows
    from flowcloud.cli import jobs
    from flowcloud.cli import models
    from flowcloud.cli import stack
    from flowcloud.cli import summarize

    for module in (jobs, flows, summarize, costs, budgets, alerts, ab, models, stack, config_cmd):
        module.register(cli)
    return cli


def main() -> None:
    build()()
