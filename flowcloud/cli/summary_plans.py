"""``flowcloud summarize --plan``: each document's summary plan beside one direct call and the other strategy.

Reads the documents and the configuration only: nothing is queued, no
provider is called, no worker needs to run. The plans are the ones a worker
would make (``flowcloud.workers.core.summary_plan``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from flowcloud.cli.render import console, echo_json

if TYPE_CHECKING:
    from flowcloud.workers.core.summary_plan import SummaryPlan


def plans(paths: list[str], extensions: list[str], model: str | None) -> list[dict[str, Any]]:
    """Per document: its name, size and three plans (the chosen, a direct call, the other
    strategy), or the reason it cannot be read. Raises ``InvalidJob`` for an unknown model."""
    from flowcloud.workers.core.config import get_config
    from flowcloud.workers.core.config_sections import SummaryStrategy
    from flowcloud.workers.core.errors import InvalidJob
    from flowcloud.workers.core.summary_plan import direct_call, plan_summary, summary_entry
    from flowcloud.workers.summaries.runs.documents import find_documents, load_text

    config = get_config()
    settings, entry = config.summarize, summary_entry(config, model)
    other = next(s for s in SummaryStrategy if s is not settings.strategy)
    rows = []
    for document in find_documents(paths, extensions):
        row: dict[str, Any] = {"document": document.name, "model": entry.name}
        try:
            text, _ = load_text(Path(document.path))
        except InvalidJob as exc:
            rows.append({**row, "error": str(exc)})
            continue
        rows.append({**row, "chars": len(text), "plan": plan_summary(text, entry, settings),
                     "direct": direct_call(text, entry, settings), "other": plan_summary(text, entry, settings, other)})
    return rows


def show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        echo_json([{key: value.as_dict() if hasattr(value, "as_dict") else value for key, value in row.items()}
                   for row in rows])
        return
    console().print(table(rows))


def table(rows: list[dict[str, Any]]) -> Table:
    model = rows[0]["model"] if rows else ""
    out = Table(title=f"summary plans ({escape(model)}; nothing was called)")
    out.add_column("document", max_width=32, overflow="ellipsis", no_wrap=True)
    out.add_column("chars", justify="right")
    for label in ("plan", "direct call", "other strategy"):
        out.add_column(label, no_wrap=True)
    for row in rows:
        if "error" in row:
            out.add_row(escape(row["document"]), "", f"[red]{escape(row['error'])}[/]", "", "")
            continue
        direct = row["direct"]
        out.add_row(escape(row["document"]), f"{row['chars']:,}", cell(row["plan"], direct), cell(direct, direct),
                    cell(row["other"], direct))
    return out


def cell(plan: SummaryPlan, direct: SummaryPlan) -> str:
    """``cheapest: 3 calls (depth 1)``, ``150,580 in / 900 out``, ``$0.023127 (1.02x direct)`` on three lines."""
    shape = f"{plan.calls} calls (depth {plan.depth})" if plan.calls > 1 else "1 call"
    ratio = f" ({plan.cost_usd / direct.cost_usd:.2f}x direct)" if plan is not direct and direct.cost_usd else ""
    text = (f"{plan.strategy}: {shape}\n{plan.input_tokens:,} in / {plan.output_tokens:,} out\n"
            f"${plan.cost_usd:.6f}{ratio}")
    return text if plan.fits else f"[red]{text}\ndoes not fit the window[/]"
