"""``flowcloud budgets``: every configured budget in its current window, read from Redis."""

from __future__ import annotations

import click


@click.command("budgets")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON instead of a table")
def budgets(as_json: bool) -> None:
    """Show each budget's spend, what running jobs hold reserved, its limit and used ratio.

    Windows are UTC days and months. A budget at ratio 1.0 refuses (or degrades) new jobs.
    """
    from dataclasses import asdict

    from rich.table import Table

    from flowcloud.workers.budget import Ledger
    from flowcloud.cli.render import console, echo_json
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect

    config = get_config()
    if not config.budgets:
        click.echo("no budgets configured (add a 'budgets:' list to the configuration)")
        return
    rows = Ledger(connect(config.redis_url_or_embedded()), config).usage()
    if as_json:
        echo_json([asdict(row) for row in rows])
        return
    table = Table()
    for title in ("budget", "period", "scope", "used $", "reserved $", "limit $", "ratio"):
        table.add_column(title, justify="right" if title.endswith(("$", "ratio")) else "left", no_wrap=True)
    for row in rows:
        style = "red" if row.ratio >= 1 else "yellow" if row.ratio >= 0.8 else ""
        scope = row.scope if row.match is None else f"{row.scope}={row.match}"
        ratio = f"[{style}]{row.ratio:.2f}[/]" if style else f"{row.ratio:.2f}"
        table.add_row(row.name, row.period, scope, f"{row.used_usd:.6f}", f"{row.reserved_usd:.6f}",
                      f"{row.limit_usd:.2f}", ratio)
    console().print(table)


def register(cli: click.Group) -> None:
    cli.add_command(budgets)
