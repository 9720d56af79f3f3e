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
    source = config_path() or "built-in defaults (the bundled simulator)"
    click.echo(f"# source: {source}")
    click.echo(yaml.safe_dump(redacted(config), sort_keys=False).rstrip())
    click.echo(routing_table(config))
    for line, readable in key_lines(config):
        click.secho(line, fg=None if readable else "yellow")
    click.secho("# configuration OK", fg="green")


def key_lines(config) -> list[tuple[str, bool]]:
    """Each provider key's reference and fingerprint, read now as a worker would read it, or why it
    cannot be read; never a key."""
    from flowcloud.workers.core.secrets import KeyPool

    lines = []
    for provider in config.providers:
        for key in KeyPool.for_provider(provider, config.vault).describe():
            if "fingerprint" in key:
                lines.append((f"# key of {provider.name}: {key['key']}, fingerprint {key['fingerprint']}", True))
            else:
                lines.append((f"# warning: {key['unavailable']}; the worker needs it", False))
    return lines


def register(cli: click.Group) -> None:
    cli.add_command(config_group)
