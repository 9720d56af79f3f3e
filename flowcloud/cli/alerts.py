"""``flowcloud alerts``: the alerts Beat's checks raised, and whether degraded mode is on.

Reads the alert state in Redis (``flowcloud.workers.alerts.state``); loads no Celery and no worker code.
"""

from __future__ import annotations

import time
from datetime import datetime

import click

from flowcloud.cli.render import console, echo_json


def _when(value: str | float | None) -> str:
    if not value:
        return "-"
    at = float(value)
    return f"{datetime.fromtimestamp(at).strftime('%m-%d %H:%M:%S')} ({_ago(time.time() - at)} ago)"


def _ago(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _show(alerts: list[dict], degraded: dict | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    if degraded:
        what = [f"cheaper model {degraded['model']}"] if degraded.get("model") else []
        if degraded.get("refuse_priority_below") is not None:
            what.append(f"refusing priority below {degraded['refuse_priority_below']}")
        out.print(f"[bold red]degraded mode ON[/] since {_when(degraded.get('since'))}: "
                  f"{', '.join(what)} (because of {escape(str(degraded.get('reason')))})")
    else:
        out.print("degraded mode off: jobs run as submitted")
    if not alerts:
        out.print("no alerts")
        return
    table = Table("alert", "state", "since", "last sent", "summary")
    for alert in alerts:
        state = "[red]firing[/]" if alert["state"] == "firing" else "[green]resolved[/]"
        table.add_row(alert["alert"], state, _when(alert.get("since")), _when(alert.get("last_sent")),
                      escape(alert.get("summary", "")))
    out.print(table)


@click.command()
@click.option("--all", "show_all", is_flag=True, help="also show alerts resolved in the last day")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def alerts(show_all: bool, as_json: bool) -> None:
    """Show firing alerts and degraded mode, as Beat's checks last found them.

    Exit status: 0 nothing firing, 5 at least one alert firing.
    """
    from flowcloud.workers.alerts.state import AlertBook
    from flowcloud.workers.core import degraded
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect

    client = connect(get_config().redis_url_or_embedded())
    book = AlertBook(client, repeat_seconds=0)
    found = book.alerts() if show_all else book.firing()
    flag = degraded.read(client)
    if as_json:
        echo_json({"alerts": found, "degraded": flag})
    else:
        _show(found, flag)
    if any(alert["state"] == "firing" for alert in found):
        raise SystemExit(5)


def register(cli: click.Group) -> None:
    cli.add_command(alerts)
