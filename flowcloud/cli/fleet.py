"""``flowcloud status`` without a job: what every worker shares of each routed deployment, read from
Redis (its circuit, latency, calls in flight)."""

from __future__ import annotations

import time

from rich.table import Table

from flowcloud.workers.core.config import Config
from flowcloud.workers.core.redis_conn import connect
from flowcloud.workers.metrics_endpoint import routed_deployments
from flowcloud.workers.routing.health import Fleet, Health


def deployment_states(config: Config) -> dict[str, Health]:
    return Fleet(connect(config.redis_url_or_embedded())).healths(routed_deployments(config))


def circuit_text(health: Health, now: float) -> str:
    if health.state == "open":
        return f"open for {now - health.opened_at:.0f} s"
    return health.state.replace("_", " ")


def fleet_table(states: dict[str, Health]) -> Table:
    table = Table("deployment", "circuit", "latency ms", "in flight", title="routed deployments")
    now = time.time()
    for deployment, health in states.items():
        latency = f"{health.latency_ms:.0f}" if health.latency_ms is not None else "-"
        table.add_row(deployment, circuit_text(health, now), latency, str(health.busy))
    return table


def fleet_json(states: dict[str, Health]) -> dict:
    return {"deployments": {d: {"circuit": h.state, "opened_at": h.opened_at or None, "latency_ms": h.latency_ms,
                                "in_flight": h.busy} for d, h in states.items()}}
