"""The plan of a Batch API run: its documents' requests, round by round, as plain data.

A run is a sequence of rounds; each round is one provider batch. Round 1 holds
the map request of every chunk of every document; when a round's results are
in, each document whose level is complete either has its summary (one text
left) or sends the next level of its reduce tree in the next round, together
with every other document's. A request that failed with a retryable error is
sent once more in the next round; after that, or at once for a permanent
error, its document fails with the reason. Chunking and prompts come from
``flowcloud.workers.core.chunking``, and a document that fits the model's window
is one request under the cheapest strategy, so a batch run cuts a document as a
task run does.

No Redis, no HTTP, no Celery here: ``flowcloud.workers.batch_runs.run`` stores and sends.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from flowcloud.workers.core.chunking import (
    clean_text, estimate_tokens, map_prompt, reduce_groups, reduce_prompt, split_into_chunks,
)
from flowcloud.workers.core.config import ModelConfig, SummarizeSettings
from flowcloud.workers.core.config_sections import SummaryStrategy
from flowcloud.workers.core.errors import ProviderError
from flowcloud.workers.pipeline.job import MESSAGE_OVERHEAD_TOKENS

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


def plan_documents(names_and_texts: list[tuple[str, str]], settings: SummarizeSettings,
                   context_tokens: int | None = None,
                   ) -> tuple[list[DocumentProgress], list[PlannedRequest]]:
    """Every document's progress and the map requests of round 1; an empty document fails now.

    With ``summarize.strategy: cheapest``, a document that fits the model's ``context_tokens`` after the
    instruction and the output budget is one request, as a task run sends it; others are cut into chunks."""
    documents, requests = [], []
    for doc, (name, text) in enumerate(names_and_texts):
        cleaned = clean_text(text)
        chunks = [cleaned] if cleaned and one_call(cleaned, settings, context_tokens) else \
            split_into_chunks(cleaned, settings.chunk_tokens, settings.overlap_tokens)
        progress = DocumentProgress(name=name, chunks=len(chunks), texts=[None] * len(chunks))
        if not chunks:
            progress.fail("the document holds no text to summarize")
        documents.append(progress)
        requests += [PlannedRequest(doc=doc, level=0, part=part, prompt=map_prompt(chunk))
                     for part, chunk in enumerate(chunks)]
    return documents, requests


def one_call(cleaned: str, settings: SummarizeSettings, context_tokens: int | None) -> bool:
    """Whether the cheapest plan sends ``cleaned`` whole: its map prompt and the summary fit the window."""
    if settings.strategy is not SummaryStrategy.CHEAPEST or context_tokens is None:
        return False
    return estimate_tokens(map_prompt(cleaned)) + MESSAGE_OVERHEAD_TOKENS + settings.summary_tokens <= context_tokens


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


def next_level(doc: int, document: DocumentProgress, settings: SummarizeSettings) -> list[PlannedRequest]:
    """Once a document's level is complete: its summary (no requests), or its next reduce requests."""
    if document.finished or any(text is None for text in document.texts):
        return []
    texts = [text for text in document.texts if text is not None]
    if len(texts) == 1:
        document.summary = texts[0]
        return []
    groups = reduce_groups(texts, settings.reduce_tokens)
    document.level += 1
    document.texts = [None] * len(groups)
    return [PlannedRequest(doc=doc, level=document.level, part=part, prompt=reduce_prompt(group))
            for part, group in enumerate(groups)]
