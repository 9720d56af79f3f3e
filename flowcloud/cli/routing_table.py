"""The routing table ``flowcloud config check`` prints: each model group's deployments and fallbacks
with what routing weighs (prices, context windows, limits, weights)."""

from __future__ import annotations

from flowcloud.workers.core.config import Config

COLUMNS = ("group", "strategy", "role", "deployment", "in $/Mtok", "out $/Mtok", "context", "rpm", "tpm", "weight")


def routing_rows(config: Config) -> list[tuple[str, ...]]:
    rows = []
    for group in config.model_groups:
        roles = [("deployment", d) for d in group.deployments] + [(f"fallback {i + 1}", d)
                                                                  for i, d in enumerate(group.fallbacks)]
        for role, deployment in roles:
            entry = config.deployment_entry(deployment)
            weight = f"{deployment.weight:g}" if group.strategy == "weighted" and role == "deployment" else "-"
            rows.append((group.name, group.strategy, role, deployment.label, f"{entry.input_per_mtok:g}",
                         f"{entry.output_per_mtok:g}", f"{entry.context_tokens:,}", _limit(deployment.rpm),
                         _limit(deployment.tpm), weight))
    return rows


def routing_table(config: Config) -> str:
    """The table as aligned text; a configuration without groups says how its models are served."""
    if not config.model_groups:
        return "# routing: no model_groups; each model goes to the first provider that lists it"
    rows = [COLUMNS, *routing_rows(config)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(["# routing table"] + [f"# {line}" for line in lines])


def _limit(value: int | None) -> str:
    return f"{value:,}" if value else "-"
