"""``flowcloud models``: what each provider's model list says of the models the configuration names.

Asks every configured provider for its model list, once, from this process with
the configured keys (``flowcloud.workers.providers.survey``); needs no worker and no Redis.
"""

from __future__ import annotations

import click

from flowcloud.cli.render import console, echo_json

EXIT_MISSING = 6
STYLES = {"served": "green", "deprecated": "yellow", "missing": "red", "unreachable": "red", "unsupported": "dim"}
SHOWN = {"unreachable": "provider unreachable", "unsupported": "listing unsupported"}


def _show(reports: list[dict]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table("provider", "configured model", "standing", "detail")
    for report in reports:
        standing = report["standing"]
        table.add_row(report["provider"], report["model"], f"[{STYLES[standing]}]{SHOWN.get(standing, standing)}[/]",
                      escape(report["detail"]))
    console().print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def models(as_json: bool) -> None:
    """Show each configured model against its provider's model list: served, deprecated, missing,
    provider unreachable, or listing unsupported (the adapter or the service has no model list).

    Exit status: 0 every listed model is served (deprecated ones included), 6 at least one configured
    model is missing from its provider's list. An unreachable provider does not change it.
    """
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.providers.survey import Standing, survey

    reports = survey(get_config())
    rows = [report.as_dict() for report in reports]
    if as_json:
        echo_json({"models": rows})
    else:
        _show(rows)
    if any(report.standing is Standing.MISSING for report in reports):
        raise SystemExit(EXIT_MISSING)


def register(cli: click.Group) -> None:
    cli.add_command(models)
