"""The plan of a Batch API run: its documents' requests, round by round, as plain data.

A run is a sequence of rounds; each round is one provider batch. Each document
is planned as a summary is (``flowcloud.workers.core.summary_plan``): with
``summarize.strategy: cheapest`` a document that fits the model's window is
one request, a longer one is cut into chunks as large as the window allows;
``fastest`` cuts chunks of ``chunk_tokens``. Round 1 holds the map request of
every chunk of every document; when a round's results are
in, each document whose level is complete either has its summary (one text
left) or sends the next level of its reduce tree in the next round, together
with every other document's. A request that failed with a retryable error is
sent once more in the next round; after that, or at once for a permanent
error, its document fails with the reason. Prompts and reduce groups come from
``flowcloud.workers.core.chunking`` and the plan, so a batch run cuts and merges a
document exactly as a task run does.

No Redis, no HTTP, no Celery here: ``flowcloud.workers.batch_runs.run`` stores and sends.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from flowcloud.workers.core.chunking import clean_text, map_prompt, reduce_groups, reduce_prompt
from flowcloud.workers.core.config import ModelConfig, SummarizeSettings
from flowcloud.workers.core.errors import ProviderError
from flowcloud.workers.core.summary_plan import plan_summary

# The first try and one retry in the next round.
MAX_ATTEMPTS = 2


class PlannedRequest(BaseModel):
    """One chat request of the current round: a map (level 0) or reduce step of one document."""

    doc: int
    level: int
    part: int
    prompt: str
    attempt: int = 1

    @property
    def custom_id(self) -> str:
        # Positions only: a document's name (a path, perhaps personal) never reaches the provider.
        return f"{self.doc}.{self.level}.{self.part}"


class DocumentProgress(BaseModel):
    """Where one document stands: its tree level, the texts of that level so far, what it cost."""

    name: str
    chunks: int = 0
    level: int = 0
    texts: list[str | None] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    summary: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None or self.error is not None

    def fail(self, reason: str) -> None:
        if not self.finished:
            self.error = reason


class Prices(BaseModel):
    """What the run's tokens cost, fixed when it starts so a report never changes afterwards."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    batch_price_ratio: float = 1.0

    @classmethod
    def of(cls, model: ModelConfig | None, batch_price_ratio: float) -> Prices:
        if model is None:
            return cls(batch_price_ratio=batch_price_ratio)
        return cls(input_per_mtok=model.input_per_mtok, output_per_mtok=model.output_per_mtok,
                   batch_price_ratio=batch_price_ratio)

    def list_price(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


def plan_documents(names_and_texts: list[tuple[str, str]], entry: ModelConfig, settings: SummarizeSettings,
                   ) -> tuple[list[DocumentProgress], list[PlannedRequest]]:
    """Every document's progress and the map requests of round 1, each document planned for ``entry``
    (the model its requests go to) by ``settings.strategy``; an empty document fails now."""
    documents, requests = [], []
    for doc, (name, text) in enumerate(names_and_texts):
        if not clean_text(text):
            documents.append(DocumentProgress(name=name, error="the document holds no text to summarize"))
            continue
        chunks = plan_summary(text, entry, settings).chunks
        documents.append(DocumentProgress(name=name, chunks=len(chunks), texts=[None] * len(chunks)))
        requests += [PlannedRequest(doc=doc, level=0, part=part, prompt=map_prompt(chunk))
                     for part, chunk in enumerate(chunks)]
    return documents, requests


def record_answer(document: DocumentProgress, request: PlannedRequest, text: str,
                  prompt_tokens: int, completion_tokens: int) -> None:
    """Keep one successful answer and count its tokens."""
    document.texts[request.part] = text
    document.prompt_tokens += prompt_tokens
    document.completion_tokens += completion_tokens


def retry_or_fail(document: DocumentProgress, request: PlannedRequest,
                  error: ProviderError) -> PlannedRequest | None:
    """The request again for the next round, or None after failing its document."""
    if error.retryable and request.attempt < MAX_ATTEMPTS:
        return request.model_copy(update={"attempt": request.attempt + 1})
    tries = f" after {request.attempt} attempts" if request.attempt > 1 else ""
    document.fail(f"{error}{tries}")
    return None


def next_level(doc: int, document: DocumentProgress, reduce_budget: int) -> list[PlannedRequest]:
    """Once a document's level is complete: its summary (no requests), or its next reduce requests,
    each merging at most ``reduce_budget`` tokens of summaries (``summary_plan.reduce_budget``)."""
    if document.finished or any(text is None for text in document.texts):
        return []
    texts = [text for text in document.texts if text is not None]
    if len(texts) == 1:
        document.summary = texts[0]
        return []
    groups = reduce_groups(texts, reduce_budget)
    document.level += 1
    document.texts = [None] * len(groups)
    return [PlannedRequest(doc=doc, level=document.level, part=part, prompt=reduce_prompt(group))
            for part, group in enumerate(groups)]
