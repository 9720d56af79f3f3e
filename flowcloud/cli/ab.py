"""``flowcloud ab``: the arms of a weighted model group side by side, and turning an arm back on."""

from __future__ import annotations

import re
import time

import click
from rich.table import Table

from flowcloud.cli.render import console, echo_json

SPAN = re.compile(r"^(\d+)([mhd])$")
MINUTES = {"m": 1, "h": 60, "d": 1440}


def minutes_in(span: str) -> int:
    found = SPAN.match(span)
    if not found or int(found[1]) == 0:
        raise click.BadParameter(f"{span!r}: give a span such as 30m, 6h or 7d")
    return int(found[1]) * MINUTES[found[2]]


@click.group("ab")
def ab_group() -> None:
    """Compare the arms of a model group (gray release, A/B tests)."""


@ab_group.command("report")
@click.argument("group")
@click.option("--since", default="1h", show_default=True, help="how far back: 30m, 6h, 7d (kept 8 days)")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def report(group: str, since: str, as_json: bool) -> None:
    """Each arm of GROUP: calls, success rate, latency p50 and p99, cost per job, tokens."""
    from flowcloud.workers.core import tally
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect
    from flowcloud.workers.routing.arms import Arms

    config = get_config()
    found = next((g for g in config.model_groups if g.name == group), None)
    if found is None:
        raise click.BadParameter(f"no model group {group!r} (groups: "
                                 f"{', '.join(g.name for g in config.model_groups) or 'none configured'})",
                                 param_hint="GROUP")
    arms = Arms(connect(config.redis_url_or_embedded()))
    last = tally.minute_of(time.time())
    labels = [d.label for d in found.chain]
    stats = arms.read(group, labels, range(last - minutes_in(since) + 1, last + 1))
    weights = {d.label: d.weight for d in found.deployments} | arms.weights(group)
    rows = {label: arm_row(stats[label], weights.get(label)) for label in labels}
    if as_json:
        echo_json({"group": group, "since": since, "arms": rows})
        return
    table = Table("arm", "weight", "calls", "success", "p50 ms", "p99 ms", "cost/job $", "tokens in", "tokens out",
                  title=f"{group}, last {since}")
    for label, row in rows.items():
        table.add_row(label, _text(row["weight"]), str(row["calls"]), f"{row['success_rate']:.1%}",
                      _text(row["p50_ms"]), _text(row["p99_ms"]), f"{row['cost_per_job_usd']:.6f}",
                      str(row["prompt_tokens"]), str(row["completion_tokens"]))
    console().print(table)


def arm_row(stats, weight: float | None) -> dict:
    return {"weight": weight, "calls": stats.calls, "success_rate": 1 - stats.error_rate if stats.calls else 0.0,
            "p50_ms": stats.percentile_ms(0.5), "p99_ms": stats.percentile_ms(0.99),
            "cost_per_job_usd": stats.cost_per_job, "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens}


@ab_group.command("restore")
@click.argument("group")
@click.argument("arm")
def restore(group: str, arm: str) -> None:
    """Give ARM of GROUP its configured weight back (after the guard turned it off)."""
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.redis_conn import connect
    from flowcloud.workers.routing.arms import Arms

    config = get_config()
    cleared = Arms(connect(config.redis_url_or_embedded())).clear_weight(group, arm)
    click.echo(f"{group}/{arm}: configured weight restored" if cleared else f"{group}/{arm}: no weight was set")


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def register(cli: click.Group) -> None:
    cli.add_command(ab_group)
