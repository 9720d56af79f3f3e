"""``flowcloud costs``: spend per flow, provider, model or day, as a table, a CSV file and a chart,
and the savings by lever.

Reads the tally the record store keeps (``flowcloud.workers.core.tally``: billed and saved nano-USD
per UTC day, flow, provider and model), so it needs no job records, which expire
long before the tally does. matplotlib is imported only when the chart is
drawn, so no other command pays for it.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import click

from flowcloud.workers.core import tally
from flowcloud.workers.core.money import from_nano

GROUPINGS = ("flow", "provider", "model", "day")
RELATIVE_PERIOD = re.compile(r"^(\d{1,3})d$")
# The tally keeps 400 days; a longer look back would only read empty keys.
MAX_DAYS = 400
# Flows beyond this many get one "other" bar segment, so the legend stays readable.
MAX_CHART_FLOWS = 12


def first_day(since: str, today: date) -> date:
    """The first UTC day of the period ``since``: ``7d`` (today and the 6 days before) or ``YYYY-MM-DD``."""
    relative = RELATIVE_PERIOD.match(since)
    if relative:
        days = int(relative.group(1))
        if not 1 <= days <= MAX_DAYS:
            raise click.BadParameter(f"{since!r}: use between 1d and {MAX_DAYS}d", param_hint="--since")
        return today - timedelta(days=days - 1)
    try:
        start = date.fromisoformat(since)
    except ValueError:
        raise click.BadParameter(f"{since!r}: expected a number of days such as 7d or 30d, "
                                 "or a date such as 2026-11-01", param_hint="--since") from None
    if start > today:
        raise click.BadParameter(f"{since!r} is in the future (today is {today.isoformat()} UTC)",
                                 param_hint="--since")
    if (today - start).days >= MAX_DAYS:
        raise click.BadParameter(f"{since!r}: the ledger keeps {MAX_DAYS} days", param_hint="--since")
    return start


def totals_by(entries: list[tally.CostEntry], by: str) -> list[tuple[str, int]]:
    """(name, nano-USD) per ``by`` value, the largest spend first (ties by name)."""
    totals: dict[str, int] = defaultdict(int)
    for entry in entries:
        totals[getattr(entry, by)] += entry.nano_usd
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def usd(nano: int) -> str:
    return f"{from_nano(nano):.6f}"


def share(nano: int, total: int) -> str:
    return f"{100 * nano / total:.1f}" if total else "0.0"


def write_csv(path: Path, by: str, rows: list[tuple[str, int]]) -> None:
    total = sum(nano for _, nano in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        out = csv.writer(file)
        out.writerow([by, "cost_usd", "share_percent"])
        for name, nano in rows:
            out.writerow([name, usd(nano), share(nano, total)])
        out.writerow(["total", usd(total), "100.0" if total else "0.0"])


def savings_by_lever(savings: list[tally.SavingEntry]) -> list[tuple[str, int]]:
    """(lever, nano-USD saved) for every lever, the largest first, levers that saved nothing last."""
    totals = {lever.value: 0 for lever in tally.Lever}
    for entry in savings:
        totals[entry.lever] = totals.get(entry.lever, 0) + entry.nano_usd
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def savings_json(spent: int, levers: list[tuple[str, int]]) -> dict:
    saved = sum(nano for _, nano in levers)
    return {"savings": [{"lever": lever, "saved_usd": from_nano(nano)} for lever, nano in levers],
            "saved_usd": from_nano(saved), "naive_usd": from_nano(spent + saved)}


def print_savings(spent: int, levers: list[tuple[str, int]]) -> None:
    from rich.table import Table

    from flowcloud.cli.render import console

    saved = sum(nano for _, nano in levers)
    naive = spent + saved
    table = Table(title="Saved by lever, against naive calls at list price", show_footer=True,
                  caption=f"spend ${usd(spent)} is {share(spent, naive)}% of the naive ${usd(naive)}")
    table.add_column("lever", footer="total")
    table.add_column("saved $", justify="right", footer=usd(saved), no_wrap=True)
    table.add_column("% of naive", justify="right", footer=share(saved, naive), no_wrap=True)
    for lever, nano in levers:
        table.add_row(lever, usd(nano), share(nano, naive))
    console().print(table)


def print_table(by: str, rows: list[tuple[str, int]], period: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from flowcloud.cli.render import console

    total = sum(nano for _, nano in rows)
    table = Table(title=f"Spend by {by}", caption=period, show_footer=True)
    table.add_column(by, footer="total", overflow="fold")
    table.add_column("cost $", justify="right", footer=usd(total), no_wrap=True)
    table.add_column("share %", justify="right", footer="100.0", no_wrap=True)
    for name, nano in rows:
        table.add_row(escape(name), usd(nano), share(nano, total))
    console().print(table)


def flows_per_day(entries: list[tally.CostEntry], days: list[str]) -> dict[str, list[float]]:
    """USD per day for each flow (the largest spenders first), with the rest merged into "other"."""
    ranked = [flow for flow, _ in totals_by(entries, "flow")]
    kept = set(ranked[:MAX_CHART_FLOWS - 1] if len(ranked) > MAX_CHART_FLOWS else ranked)
    series: dict[str, list[float]] = {}
    index = {day: i for i, day in enumerate(days)}
    for entry in entries:
        name = entry.flow if entry.flow in kept else "other"
        series.setdefault(name, [0.0] * len(days))[index[entry.day]] += entry.usd
    order = [flow for flow in ranked if flow in kept] + (["other"] if "other" in series else [])
    return {name: series[name] for name in order}


def dollar_decimals(largest: float) -> int:
    """Decimals that show a few significant digits of ``largest``: $12, $0.25, $0.00042."""
    return max(0, 1 - math.floor(math.log10(largest))) if largest > 0 else 2


def draw_chart(path: Path, entries: list[tally.CostEntry], days: list[str], period: str) -> None:
    """Spend over time by flow: one stacked bar per UTC day."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    from matplotlib import pyplot

    series = flows_per_day(entries, days)
    figure, axes = pyplot.subplots(figsize=(max(7.0, 0.45 * len(days) + 3), 4.5), dpi=110)
    bottoms = [0.0] * len(days)
    colors = pyplot.get_cmap("tab20" if len(series) > 10 else "tab10")
    positions = range(len(days))
    for number, (flow, values) in enumerate(series.items()):
        axes.bar(positions, values, bottom=bottoms, label=flow, color=colors(number), width=0.75)
        bottoms = [low + value for low, value in zip(bottoms, values)]
    step = max(1, len(days) // 15)  # at most ~15 date labels, whatever the period
    axes.set_xticks(list(positions)[::step], [day[5:] for day in days][::step], rotation=45, ha="right")
    axes.set_title(f"flowcloud spend by flow, {period}")
    axes.set_xlabel("day (UTC)")
    axes.set_ylabel("cost (USD)")
    axes.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter(f"$%.{dollar_decimals(max(bottoms))}f"))
    axes.grid(axis="y", alpha=0.3)
    axes.legend(title="flow", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)


@click.command()
@click.option("--since", default="7d", show_default=True,
              help="the period: 7d, 30d (that many days up to today) or a start date such as 2026-11-01")
@click.option("--by", type=click.Choice(GROUPINGS), default="flow", show_default=True, help="how to split the spend")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV file to write [default: <var_dir>/costs/costs-by-<by>.csv]")
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="chart to write: spend per day by flow [default: <var_dir>/costs/costs.png]")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def costs(since: str, by: str, csv_path: Path | None, png_path: Path | None, as_json: bool) -> None:
    """Billed spend by flow, provider, model or day (UTC days), with a CSV file and a PNG chart,
    and what each lever saved against naive calls at list price.

    Counts what workers billed as jobs finished; a summary's cost is its chunk jobs'. The levers:
    cache, coalescing, local_tier, batch_api, summary_plan, cached_input.
    """
    from flowcloud.cli.render import echo_json
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect

    config = get_config()
    today = datetime.now(timezone.utc).date()
    days = tally.days_between(first_day(since, today), today)
    period = f"{days[0]} to {days[-1]} UTC"
    client = connect(config.redis_url_or_embedded())
    entries = tally.read_costs(client, days)
    levers = savings_by_lever(tally.read_savings(client, days))
    if not entries:
        message = f"No spend recorded from {period}."
        echo_json({"period": [days[0], days[-1]], "by": by, "rows": [], "total_usd": 0.0,
                   **savings_json(0, levers)}) if as_json else click.echo(message)
        return
    rows = totals_by(entries, by)
    spent = sum(nano for _, nano in rows)
    csv_path = csv_path or config.var_dir / "costs" / f"costs-by-{by}.csv"
    png_path = png_path or config.var_dir / "costs" / "costs.png"
    write_csv(csv_path, by, rows)
    draw_chart(png_path, entries, days, period)
    if as_json:
        echo_json({"period": [days[0], days[-1]], "by": by,
                   "rows": [{by: name, "cost_usd": from_nano(nano)} for name, nano in rows],
                   "total_usd": from_nano(spent), **savings_json(spent, levers), "csv": str(csv_path),
                   "png": str(png_path)})
        return
    print_table(by, rows, period)
    print_savings(spent, levers)
    click.echo(f"CSV: {csv_path}\nchart: {png_path}")


def register(cli: click.Group) -> None:
    cli.add_command(costs)
