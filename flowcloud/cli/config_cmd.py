"""``flowcloud config check``: validate and show the effective configuration, secrets hidden."""

from __future__ import annotations

import click
import yaml


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
def check() -> None:
    """Validate the configuration and print it with secrets redacted, then its routing table.

    Exits 2 with the field's path and the reason when anything is wrong.
    """
    from flowcloud.cli.routing_table import routing_table
    from flowcloud.workers.core.config import config_path, load_config, redacted

    config = load_config()
    if config.mask is not None:
        from flowcloud.workers.core.masking import masker_for

        masker_for(config.mask)  # a configured detector that cannot be imported here: ConfigError, exit 2
    source = config_path() or "built-in defaults (the bundled simulator)"
    click.echo(f"# source: {source}")
    click.echo(yaml.safe_dump(redacted(config), sort_keys=False).rstrip())
    click.echo(routing_table(config))
    missing = [p.api_key_env for p in config.providers if p.api_key_env and not p.api_key()]
    for name in missing:
        click.secho(f"# warning: ${name} is not set in this environment; the worker needs it", fg="yellow")
    click.secho("# configuration OK", fg="green")


def register(cli: click.Group) -> None:
    cli.add_command(config_group)
