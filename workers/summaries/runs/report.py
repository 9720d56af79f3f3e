"""What a run did: per document (done, skipped, failed) and in total, as written to ``run-report.json``."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field


class Outcome(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class RunStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"


class DocumentResult(BaseModel):
    """How one document ended; ``reason`` says why it failed or was skipped."""

    name: str
    source: str
    outcome: Outcome
    sha256: str | None = None
    output: str | None = None
    reason: str | None = None
    job_id: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    # What the same calls cost at the normal price: differs from cost_usd for Batch API runs.
    list_price_usd: float = 0.0
    chunks: int | None = None


class RunReport(BaseModel):
    """The run as a whole: ``as_dict()`` is the JSON file's content."""

    run_id: str
    name: str
    status: RunStatus
    mode: str
    mode_reason: str | None  # a scheduled run's: why it went this way
    model: str | None
    flow: str | None
    sources: list[str]
    output: str
    started_at: str
    finished_at: str | None
    duration_s: float
    documents: int
    done: int
    skipped: int
    failed: int
    remaining: int  # found but not finished: an interrupted run leaves these for the next one
    tokens_in: int
    tokens_out: int
    cost_usd: float
    list_price_usd: float
    saving_usd: float
    failures: list[dict[str, str]]
    results: list[DocumentResult] = Field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def build_report(*, run_id: str, name: str, status: RunStatus, spec: dict[str, Any], started_at: float,
                 results: list[DocumentResult], documents: int, finished_at: float | None = None) -> RunReport:
    """Totals over ``results``; ``documents`` counts all found, unfinished ones included."""
    end = finished_at or time.time()
    count = {outcome: sum(r.outcome == outcome for r in results) for outcome in Outcome}
    cost = sum(r.cost_usd for r in results)
    list_price = sum(r.list_price_usd for r in results)
    return RunReport(
        run_id=run_id, name=name, status=status, mode=spec["mode"], mode_reason=spec.get("mode_reason"),
        model=spec.get("model"),
        flow=spec.get("flow"), sources=list(spec["sources"]), output=str(spec["output"]),
        started_at=_iso(started_at), finished_at=_iso(finished_at) if finished_at else None,
        duration_s=round(end - started_at, 3), documents=documents,
        done=count[Outcome.DONE], skipped=count[Outcome.SKIPPED], failed=count[Outcome.FAILED],
        remaining=documents - len(results),
        tokens_in=sum(r.tokens_in for r in results), tokens_out=sum(r.tokens_out for r in results),
        cost_usd=round(cost, 9), list_price_usd=round(list_price, 9), saving_usd=round(list_price - cost, 9),
        failures=[{"document": r.name, "reason": r.reason or "unknown"} for r in results
                  if r.outcome == Outcome.FAILED],
        results=results,
    )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
