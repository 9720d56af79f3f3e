"""Cutting long texts for summarization: token estimates, overlapping chunks, reduce groups.

Pure functions of their arguments: no Redis, no provider, no Celery. The
summarize task, the document runs and the Batch API runs all plan their calls
with these, so every path cuts a document the same way.

Tokens are estimated at four characters each, the rule of thumb OpenAI
publishes for English. An exact tokenizer would need each model's vocabulary
(tiktoken downloads it at first use); the estimate only has to keep chunks
comfortably inside a context window, and the budgets leave room for its error.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

CHARS_PER_TOKEN = 4
# What a chat API adds to each message's text (role, separators), so a reservation errs high.
MESSAGE_OVERHEAD_TOKENS = 4
# Paragraph breaks first, then sentence ends: chunks end where a reader would pause.
PARAGRAPH = re.compile(r"\n\s*\n")
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")

MAP_INSTRUCTION = (
    "Summarize the following part of a longer document in a few sentences. "
    "Keep names, numbers and conclusions.\n\n"
)
REDUCE_INSTRUCTION = (
    "The following are summaries of consecutive parts of one document. "
    "Merge them into one summary of the whole document.\n\n"
)


def estimate_tokens(text: str) -> int:
    """Roughly how many tokens ``text`` costs: one per four characters, at least one."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def clean_text(text: str) -> str:
    """Whitespace tidied: no trailing spaces, runs of blank lines cut to one, no control characters."""
    text = re.sub(r"[^\S\n]+", " ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_into_chunks(text: str, chunk_tokens: int, overlap_tokens: int = 0) -> list[str]:
    """``text`` cut into chunks of at most ``chunk_tokens`` tokens, each starting with
    about ``overlap_tokens`` of the previous chunk's end so no idea is cut in half unseen.
    """
    if overlap_tokens >= chunk_tokens:
        raise ValueError("overlap_tokens must be smaller than chunk_tokens")
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for unit in _units(text, chunk_tokens - overlap_tokens):
        cost = estimate_tokens(unit)
        if current and size + cost > chunk_tokens:
            chunks.append(" ".join(current))
            current = _tail(current, overlap_tokens)
            size = sum(estimate_tokens(u) for u in current)
        current.append(unit)
        size += cost
    if current:
        chunks.append(" ".join(current))
    return chunks


def reduce_groups(summaries: list[str], reduce_tokens: int) -> list[list[str]]:
    """Consecutive summaries grouped so each group fits one reduce call of ``reduce_tokens``.

    One group means the next reduce gives the final summary; more groups mean
    another level of the tree. Every group holds at least two summaries when it
    can, so each level really shrinks the text.
    """
    groups: list[list[str]] = []
    size = 0
    for summary in summaries:
        cost = estimate_tokens(summary)
        if groups and (size + cost <= reduce_tokens or len(groups[-1]) < 2):
            groups[-1].append(summary)
            size += cost
        else:
            groups.append([summary])
            size = cost
    return groups


def map_prompt(chunk: str) -> str:
    return MAP_INSTRUCTION + chunk


def reduce_prompt(summaries: list[str]) -> str:
    parts = "\n\n".join(f"Part {i}: {summary}" for i, summary in enumerate(summaries, 1))
    return REDUCE_INSTRUCTION + parts


def _units(text: str, max_tokens: int) -> Iterator[str]:
    """Paragraphs, else sentences, else hard cuts: each at most ``max_tokens``."""
    for paragraph in PARAGRAPH.split(text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if estimate_tokens(paragraph) <= max_tokens:
            yield paragraph
            continue
        for sentence in SENTENCE_END.split(paragraph):
            step = max_tokens * CHARS_PER_TOKEN
            for start in range(0, len(sentence), step):
                yield sentence[start:start + step]


def _tail(units: list[str], tokens: int) -> list[str]:
    """The end of a chunk, within ``tokens``: its last whole units, then the end of the
    unit before them. Without that cut, a last paragraph longer than the overlap
    (the usual case) would leave no overlap at all."""
    tail: list[str] = []
    size = 0
    for unit in reversed(units):
        cost = estimate_tokens(unit)
        if size + cost > tokens:
            end = _last_words(unit, (tokens - size) * CHARS_PER_TOKEN)
            if end:
                tail.insert(0, end)
            break
        tail.insert(0, unit)
        size += cost
    return tail


def _last_words(text: str, chars: int) -> str:
    """At most ``chars`` characters from the end of ``text``, starting at a word."""
    if chars <= 0:
        return ""
    end = text[-chars:]
    if len(end) == len(text) or text[-chars - 1].isspace() or " " not in end:
        return end
    return end.split(" ", 1)[1]
