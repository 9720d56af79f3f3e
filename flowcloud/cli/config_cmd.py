"""``flowcloud config check``: validate and show the effective configuration, secrets hidden."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import click
import yaml

if TYPE_CHECKING:
    from flowcloud.workers.core.config import Config


@click.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("check")
@click.option("--resolve", is_flag=True, help="also resolve host names and judge their addresses (DNS lookups)")
def check(resolve: bool) -> None:
    """Validate the configuration and print it with secrets redacted, then its routing table.

    Exits 2 with the field's path and the reason when anything is wrong, a URL the
    SSRF guard would refuse included.
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
    for line, readable in key_lines(config):
        click.secho(line, fg=None if readable else "yellow")
    refusals = list(refused_urls(config, resolve))
    for field, reason in refusals:
        click.secho(f"# refused: {field}: {reason}", fg="red")
    if refusals:
        raise SystemExit(2)
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


def refused_urls(config: Config, resolve: bool) -> Iterator[tuple[str, str]]:
    """Each URL the guard would refuse, by its field: judged as written (scheme, credentials, an address
    in any form), and with ``resolve`` by the addresses its name resolves to (a name that does not
    resolve is left to the connection)."""
    import socket

    from flowcloud.workers.alerts.sinks import WEBHOOK
    from flowcloud.workers.core.errors import AddressRefused
    from flowcloud.workers.core.ssrf import Guard

    targets = [(f"providers.{i}.base_url", p.base_url, Guard(p.name, allow_private=p.allow_private))
               for i, p in enumerate(config.providers)]
    targets += [(f"alerts.sinks.{i}.url", s.url, Guard(WEBHOOK, allow_private=s.allow_private))
                for i, s in enumerate(config.alerts.sinks if config.alerts else []) if s.url]
    for field, url, guard in targets:
        try:
            guard.check(url) if resolve else guard.check_written(url)
        except AddressRefused as refused:
            yield field, str(refused)
        except socket.gaierror:
            pass


def register(cli: click.Group) -> None:
    cli.add_command(config_group)
