"""A summary's plan: its calls level by level, the tokens they take and give, and what they cost.

Computed from the text, the entry of the model that will serve it and the
``summarize`` settings, before any call. Both ways a summary runs follow it:
the summary tree (``flowcloud.workers.summaries.tree``) queues the plan's
chunks as jobs and reduces their summaries, and a Batch API run
(``flowcloud.workers.batch_runs``) sends them as batch requests. It lives in
the foundation so that both may import it. Pure: no Redis, no provider, no
Celery, so ``flowcloud summarize --plan`` prints the same plan a worker runs.

Two strategies (``summarize.strategy``):

    cheapest   the fewest tokens billed. A text that fits the model's context
               window, after the instruction and the output budget, goes as one
               call. A longer one is cut into chunks as large as the window
               allows: fewer chunks, so less overlap and fewer summaries to merge
               (``chunk_tokens``' chunks where they make as many and bill fewer).
    fastest    chunks of ``chunk_tokens`` summarized in parallel, for latency:
               each call is short, but the overlap and the merging are paid for.

Tokens are the four-characters estimate of ``flowcloud.workers.core.chunking``,
counted as the pipeline counts a job's prompt, so a call the plan says fits is
not passed over by routing. Outputs are counted at their ``max_tokens``: the
expected cost is what the plan may cost at most for its outputs, and the
figure two plans are compared by. This module must not queue or call anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowcloud.workers.core.chunking import (
    CHARS_PER_TOKEN, MAP_INSTRUCTION, MESSAGE_OVERHEAD_TOKENS, REDUCE_INSTRUCTION, clean_text, estimate_tokens,
    map_prompt, reduce_groups, reduce_prompt, split_into_chunks,
)
from flowcloud.workers.core.config import Config, ModelConfig, SummarizeSettings
from flowcloud.workers.core.config_sections import SummaryStrategy

DIRECT = "direct"  # the plan that is one call whatever the window: what the others are measured against


@dataclass(frozen=True)
class Level:
    """One level of the tree: its calls, and the tokens they send and may receive in all."""

    calls: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class SummaryPlan:
    """How one text is summarized: ``chunks`` are the texts of level 0, the later levels merge."""

    strategy: str  # cheapest, fastest, or direct
    chunk_tokens: int  # the most tokens of one chunk; the text's own for one call
    overlap_tokens: int  # repeated between neighbouring chunks; 0 for one call
    levels: tuple[Level, ...]
    input_per_mtok: float
    output_per_mtok: float
    fits: bool = True  # False: a call of this plan is longer than the model's window (only a direct plan)
    chunks: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def calls(self) -> int:
        return sum(level.calls for level in self.levels)

    @property
    def depth(self) -> int:
        """Reduce levels: 0 when the chunks' one summary is the summary."""
        return len(self.levels) - 1

    @property
    def input_tokens(self) -> int:
        return sum(level.input_tokens for level in self.levels)

    @property
    def output_tokens(self) -> int:
        return sum(level.output_tokens for level in self.levels)

    @property
    def cost_usd(self) -> float:
        return (self.input_tokens * self.input_per_mtok + self.output_tokens * self.output_per_mtok) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "calls": self.calls, "depth": self.depth, "fits": self.fits,
                "chunk_tokens": self.chunk_tokens, "overlap_tokens": self.overlap_tokens,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost_usd": round(self.cost_usd, 9),
                "levels": [{"calls": lv.calls, "input_tokens": lv.input_tokens, "output_tokens": lv.output_tokens}
                           for lv in self.levels]}

    def describe(self) -> str:
        """One line for logs: ``cheapest: 2 chunks of up to 127,669 tokens, depth 1, 3 calls, ...``."""
        shape = ("one call" if self.calls == 1 else
                 f"{self.levels[0].calls} chunks of up to {self.chunk_tokens:,} tokens, depth {self.depth}")
        return (f"{self.strategy}: {shape}, {self.calls} calls, {self.input_tokens:,} tokens in, "
                f"{self.output_tokens:,} out at most, ~${self.cost_usd:.6f}")


def summary_entry(config: Config, model: str | None) -> ModelConfig:
    """The entry of the model a summary asking for ``model`` is served by (a group's: its first
    deployment's). Raises ``InvalidJob`` for a model nobody serves."""
    return config.serving(model or config.summarize.model or config.default_model)[1]


def plan_summary(text: str, entry: ModelConfig, settings: SummarizeSettings,
                 strategy: SummaryStrategy | None = None, max_tokens: int | None = None) -> SummaryPlan:
    """The plan for ``text`` with ``strategy`` (default ``settings.strategy``); ``max_tokens`` bounds
    the final summary (default ``settings.summary_tokens``)."""
    strategy = SummaryStrategy(strategy or settings.strategy)
    cleaned = clean_text(text)
    final = max_tokens or settings.summary_tokens
    if strategy is SummaryStrategy.CHEAPEST and fits(map_prompt(cleaned), final, entry):
        return _one_call(cleaned, entry, final, strategy.value)
    room = chunk_room(entry, settings, final)
    size = min(settings.chunk_tokens, room)
    fastest = _chunked(cleaned, entry, settings, final, size, room, strategy)
    if strategy is SummaryStrategy.FASTEST or size == room:
        return fastest
    # The largest chunks make the fewest calls, but not always the fewest tokens: where both cut the text
    # into as many chunks, the smaller ones' overlaps may fall shorter. Cheapest is the cheaper of the two.
    largest = _chunked(cleaned, entry, settings, final, room, room, strategy)
    return min((largest, fastest), key=lambda plan: (plan.cost_usd, plan.calls))


def _chunked(cleaned: str, entry: ModelConfig, settings: SummarizeSettings, final: int, size: int, room: int,
             strategy: SummaryStrategy) -> SummaryPlan:
    """The plan that cuts ``cleaned`` into chunks of ``size`` tokens."""
    overlap = min(settings.overlap_tokens, max(0, size // 2 - 1))
    chunks = _chunks_within(cleaned, size, overlap, room)
    if len(chunks) == 1:  # the text as it was cleaned, paragraphs and all, when that fits too
        whole = cleaned if fits(map_prompt(cleaned), final, entry) else chunks[0]
        return _one_call(whole, entry, final, strategy.value, chunk_tokens=size)
    levels = [Level(len(chunks), sum(call_tokens(map_prompt(c)) for c in chunks), len(chunks) * settings.summary_tokens)]
    levels += _reduce_levels(len(chunks), settings, reduce_budget(entry, settings), final)
    return SummaryPlan(strategy.value, size, overlap, tuple(levels), entry.input_per_mtok, entry.output_per_mtok,
                       chunks=tuple(chunks))


def direct_call(text: str, entry: ModelConfig, settings: SummarizeSettings,
                max_tokens: int | None = None) -> SummaryPlan:
    """The whole text in one call, whether or not it fits the window (``fits`` says)."""
    return _one_call(clean_text(text), entry, max_tokens or settings.summary_tokens, DIRECT)


def call_tokens(prompt: str) -> int:
    """The tokens a call of ``prompt`` sends, counted as the pipeline counts a job's single message."""
    return estimate_tokens(prompt) + MESSAGE_OVERHEAD_TOKENS


def fits(prompt: str, max_tokens: int, entry: ModelConfig) -> bool:
    return call_tokens(prompt) + max_tokens <= entry.context_tokens


def chunk_room(entry: ModelConfig, settings: SummarizeSettings, max_tokens: int | None = None) -> int:
    """The most tokens of text one chunk's call can hold beside its instruction and its summary
    (``max_tokens`` when larger: a chunk left alone makes the final summary)."""
    output = max(settings.summary_tokens, max_tokens or 0)
    spare = entry.context_tokens - estimate_tokens(MAP_INSTRUCTION) - MESSAGE_OVERHEAD_TOKENS - output
    return max(spare, 2)


def reduce_budget(entry: ModelConfig, settings: SummarizeSettings) -> int:
    """The most tokens of summaries one reduce call merges: ``reduce_tokens``, within the window."""
    spare = entry.context_tokens - estimate_tokens(REDUCE_INSTRUCTION) - MESSAGE_OVERHEAD_TOKENS - settings.summary_tokens
    return max(1, min(settings.reduce_tokens, spare))


def _one_call(text: str, entry: ModelConfig, max_tokens: int, strategy: str, chunk_tokens: int | None = None,
              overlap: int = 0) -> SummaryPlan:
    prompt = map_prompt(text)
    level = Level(1, call_tokens(prompt), max_tokens)
    return SummaryPlan(strategy, chunk_tokens or estimate_tokens(text), overlap, (level,), entry.input_per_mtok,
                       entry.output_per_mtok, fits=fits(prompt, max_tokens, entry), chunks=(text,))


def _chunks_within(text: str, size: int, overlap: int, room: int) -> list[str]:
    """``text`` cut into chunks of ``size`` tokens, none longer than ``room`` once joined.

    The chunker counts a chunk as the sum of its parts; the spaces joining them
    can add a few tokens more, so a chunk cut right at the window's edge is cut
    again a little smaller.
    """
    while True:
        chunks = split_into_chunks(text, size, overlap)
        over = max(estimate_tokens(chunk) for chunk in chunks) - room
        if over <= 0 or size - over <= 2 * overlap:
            return chunks
        size -= over


def _reduce_levels(summaries: int, settings: SummarizeSettings, budget: int, final: int) -> list[Level]:
    """The reduce levels above ``summaries`` chunk summaries, each summary counted at its budget."""
    stand_in = "x" * (settings.summary_tokens * CHARS_PER_TOKEN)
    levels = []
    while summaries > 1:
        groups = reduce_groups([stand_in] * summaries, budget)
        output = final if len(groups) == 1 else len(groups) * settings.summary_tokens
        levels.append(Level(len(groups), sum(call_tokens(reduce_prompt(g)) for g in groups), output))
        summaries = len(groups)
    return levels
