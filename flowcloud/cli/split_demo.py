"""The demo's second part: questions sent to a hybrid group, simple ones answered by the local model.

Shown when the configuration has a hybrid group (the built-in defaults add one
when the local model is installed): each question's tier, the reason and the
answer, then what the local answers would have cost on the group's cloud
deployment.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from flowcloud.cli.render import console
from flowcloud.workers.core.config import Config
from flowcloud.workers.core.config_routing import ModelGroup
from flowcloud.workers.core.jobs import submit_many, wait_all

DEMO_FLOW = "demo"
# Short factual and classification prompts the 135M local model answers right at temperature 0,
# and prompts whose code, reasoning and steps send them to the cloud.
QUESTIONS = (
    "Which city is the capital of France?",
    "Which city is the capital of Japan?",
    "What is the opposite of hot?",
    "Write a Python function that merges two sorted lists, then explain why it runs in linear time.",
    "Compare three ways to halve a cloud bill step by step, and justify which one to try first.",
)
ANSWER_TOKENS = 120


def hybrid_group(config: Config) -> ModelGroup | None:
    return next((group for group in config.model_groups if group.hybrid), None)


def cloud_price_of(config: Config, group: ModelGroup, record: dict) -> float:
    """What a record's tokens would have cost on the group's first cloud deployment."""
    usage = record.get("usage") or {}
    prices = config.deployment_entry(group.deployments[0])
    return prices.cost(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


def run_split_demo(config: Config, group: ModelGroup, timeout: float = 120) -> list[dict]:
    """Ask the questions through ``group``; prints the split and returns the records."""
    out = console()
    out.print(f"[bold]demo:[/] {len(QUESTIONS)} questions to the hybrid group {group.name!r}: simple ones "
              f"to {group.hybrid.local.label}, the rest to {group.deployments[0].label}")
    job_ids = submit_many(list(QUESTIONS), model=group.name, flow=DEMO_FLOW, max_tokens=ANSWER_TOKENS,
                          cache=False, temperature=0)
    records = wait_all(job_ids, timeout=timeout)
    out.print(split_table(records))
    out.print(savings_line(config, group, records))
    return records


def tier_of(record: dict) -> tuple[str, float | None]:
    """The tier that answered and the complexity score that sent it there, from the record's route."""
    hybrid = (record.get("route") or {}).get("hybrid") or {}
    return hybrid.get("tier", "?"), hybrid.get("score")


def split_table(records: list[dict]) -> Table:
    """One row per question; fits 80 columns (the record's route holds the features behind each score)."""
    table = Table(title="the hybrid split")
    table.add_column("question", max_width=26, overflow="ellipsis", no_wrap=True)
    table.add_column("tier, score", no_wrap=True, min_width=11)
    table.add_column("answer", max_width=20, overflow="ellipsis", no_wrap=True)
    table.add_column("cost $", justify="right", no_wrap=True, min_width=8)
    for question, record in zip(QUESTIONS, records):
        tier, score = tier_of(record)
        shown = f"[green]{tier}[/]" if tier == "local" else tier
        succeeded = record["status"] == "succeeded"
        answer = escape(" ".join((record.get("text") or "").split())) if succeeded else f"[red]{record['status']}[/]"
        table.add_row(escape(question), f"{shown} {score:.2f}" if score is not None else shown, answer,
                      f"{record.get('cost_usd', 0):.6f}")
    return table


def savings_line(config: Config, group: ModelGroup, records: list[dict]) -> str:
    local = [r for r in records if r["status"] == "succeeded" and tier_of(r)[0] == "local"]
    spent = sum(r.get("cost_usd", 0) for r in records)
    saved = sum(cloud_price_of(config, group, r) for r in local)
    return (f"{len(local)} of {len(records)} answered on this machine; spent ${spent:.6f}, "
            f"saved ${saved:.6f} that {group.deployments[0].label} would have charged for them")
