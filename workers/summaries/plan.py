"""The summary plan's former place: it is ``flowcloud.workers.core.summary_plan`` now, below both
the summaries and the Batch API runs, which plan with it. Its names stay importable from here."""

from flowcloud.workers.core.summary_plan import (
    DIRECT, Level, SummaryPlan, call_tokens, chunk_room, direct_call, fits, plan_summary, reduce_budget,
    summary_entry,
)

__all__ = ["DIRECT", "Level", "SummaryPlan", "call_tokens", "chunk_room", "direct_call", "fits", "plan_summary",
           "reduce_budget", "summary_entry"]
