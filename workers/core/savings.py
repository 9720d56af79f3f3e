"""What a finished job saved against its naive call, by lever: the ``savings_usd`` of its record.

The naive call is the one a team would make without flowcloud: the model the
job asked for, one direct call, at list price (every prompt token at the input
price). Each function here prices one lever from what the finishing writer
already holds, so the saving goes into the same write as the record's end
(``flowcloud.workers.core.records``), and the tally counts it
(``flowcloud.workers.core.tally``). Pure arithmetic on the configuration: no
Redis, nothing worker-side.
"""

from __future__ import annotations

from typing import Any

from flowcloud.workers.core.config import Config
from flowcloud.workers.core.config_routing import ModelGroup
from flowcloud.workers.core.config_sections import ModelConfig
from flowcloud.workers.core.tally import Lever


def list_cost(entry: ModelConfig | None, usage: dict[str, Any] | None) -> float:
    """``usage`` (a record's token counts) at ``entry``'s list price, cached input at the full input price."""
    if entry is None or not usage:
        return 0.0
    return entry.cost(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def answered_by_another(config: Config, answer: dict[str, Any], lever: Lever) -> dict[str, float]:
    """A job finished by another job's answer (``answer``: the cached record fields): its whole naive call."""
    named = [p for p in config.providers if p.name == answer.get("provider")]
    # None when the provider has left the configuration since: nothing to price it at.
    entry = named[0].price(answer.get("model") or "") if named else None
    saved = list_cost(entry, answer.get("usage"))
    return {lever.value: saved} if saved > 0 else {}


def of_call(entry: ModelConfig | None, usage: dict[str, Any], cloud: ModelConfig | None = None) -> dict[str, float]:
    """A call's savings: its prompt-cache hits (list minus cached price) and, when a local tier served it,
    what ``cloud`` (the cloud tier it would have gone to) would have billed for the same tokens."""
    savings: dict[str, float] = {}
    cached = int(usage.get("cached_tokens") or 0)
    if entry is not None and cached:
        savings[Lever.CACHED_INPUT.value] = entry.cached_input_saving(cached)
    if cloud is not None:
        savings[Lever.LOCAL_TIER.value] = list_cost(cloud, usage) - list_cost(entry, usage)
    return {lever: usd for lever, usd in savings.items() if usd > 0}


def cheapest_cloud(config: Config, group: ModelGroup) -> ModelConfig | None:
    """The cloud tier of a hybrid ``group`` a local answer is priced against: its cheapest deployment, so a
    saving is never claimed against a dearer model than the job could have had."""
    local = group.hybrid.local if group.hybrid else None
    entries = [config.deployment_entry(d) for d in group.deployments if d != local]
    return min(entries, key=lambda e: (e.input_per_mtok, e.output_per_mtok), default=None)
