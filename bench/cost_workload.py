"""The cost benchmark's standard mixed workload: what a team's flows send in a day, generated from a seed.

Items, each one request a team would otherwise send as one direct chat call:

    simple     short factual questions (the hybrid split's local tier may take them)
    complex    short questions asking for code and reasoning (always the cloud)
    repeat     exact repeats of earlier short questions: half sent beside their original
               (coalescing), half after it finished (the cache)
    question   questions about documents of 5-50 KB: the document in the system message
               after the shared instruction, the question last; the first question on
               each document is asked before the others
    summary    documents of 5-50 KB summarized while someone waits
    nightly    documents of 5-50 KB summarized by a nightly schedule

``check_mix`` holds the mix to what the benchmark promises: repeats at most 30% of the
items, simple prompts (repeats of simple ones included) at most 60%, and documents at
least half of the naive spend. Pure: nothing here sends anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bench.summarization import document
from flowcloud.workers.core.chunking import map_prompt

SEED = 20261202
MAX_REPEAT_SHARE = 0.30
MAX_SIMPLE_SHARE = 0.60
MIN_DOCUMENT_SPEND_SHARE = 0.50
QUESTION_INSTRUCTION = ("You answer questions about the document below, from the document only. "
                        "Quote the passage your answer rests on.\n\n")
COUNTRIES = ("France", "Italy", "Spain", "Japan", "Kenya", "Chile", "Canada", "Norway", "Egypt", "Peru", "India",
             "Greece", "Poland", "Mexico", "Ghana", "Vietnam", "Ireland", "Austria", "Brazil", "Turkey")
SIMPLE = ("What is the capital of {}?", "Which continent is {} in?")
TASKS = ("merges two sorted lists", "finds the median of a stream of numbers", "checks whether a string is a "
         "palindrome", "parses an ISO 8601 date", "removes duplicates from a list while keeping order",
         "computes a moving average", "counts the words in a text file", "validates an IBAN",
         "groups records by a key", "finds the shortest path in a grid", "rotates a matrix by 90 degrees",
         "detects a cycle in a linked list", "converts Roman numerals", "flattens a nested list",
         "computes a histogram of ages", "retries a flaky HTTP call with backoff")
COMPLEX = "Write a Python function that {}, then explain step by step why it is correct and analyse its complexity."
QUESTIONS = ("Which years does the document mention most?", "Who is responsible for the budget?",
             "What risks does it name?", "What does it say about the supplier contracts?",
             "Which decisions were taken at the meetings?", "What is the forecast for revenue?",
             "Which regions are mentioned?", "What does it recommend doing next?")
QUESTION_SIZES_KB = (5, 12, 20, 30, 40, 50)
SUMMARY_SIZES_KB = (8, 35)
NIGHTLY_SIZES_KB = (5, 9, 14, 18, 22, 27, 31, 36, 40, 44, 47, 50)


@dataclass(frozen=True)
class Item:
    """One request of the workload, and the one direct chat call it would be without flowcloud."""

    kind: str  # simple, complex, repeat, question, summary, nightly
    messages: tuple[dict[str, str], ...]
    simple: bool = False  # a short factual question, or a repeat of one
    text: str = field(default="", repr=False)  # a summary's or nightly document's text
    name: str = ""  # a nightly document's file name
    later: bool = False  # sent once the first round finished: a late repeat, or a follow-up question

    @property
    def document(self) -> bool:
        return self.kind in ("question", "summary", "nightly")


@dataclass(frozen=True)
class Scale:
    simple: int = 40
    complex: int = 16
    repeats: int = 24
    questions_per_document: int = len(QUESTIONS)
    question_sizes: tuple[int, ...] = QUESTION_SIZES_KB
    summary_sizes: tuple[int, ...] = SUMMARY_SIZES_KB
    nightly_sizes: tuple[int, ...] = NIGHTLY_SIZES_KB


QUICK = Scale(simple=12, complex=4, repeats=6, questions_per_document=4, question_sizes=(5, 30),
              summary_sizes=(8,), nightly_sizes=(5, 20, 40))


def workload(scale: Scale = Scale(), seed: int = SEED) -> list[Item]:
    rng = random.Random(seed)
    simple = [Item("simple", _user(q), simple=True) for q in
              rng.sample([t.format(c) for t in SIMPLE for c in COUNTRIES], scale.simple)]
    complex_ = [Item("complex", _user(COMPLEX.format(task))) for task in rng.sample(TASKS, scale.complex)]
    originals = rng.sample(simple, scale.repeats * 2 // 3) + rng.sample(complex_, scale.repeats - scale.repeats * 2 // 3)
    repeats = [Item("repeat", item.messages, simple=item.simple, later=bool(i % 2)) for i, item in enumerate(originals)]
    return [*simple, *complex_, *repeats, *_questions(scale), *_summaries(scale), *_nightly(scale)]


def _questions(scale: Scale) -> list[Item]:
    items = []
    for number, size in enumerate(scale.question_sizes):
        system = {"role": "system", "content": QUESTION_INSTRUCTION + document(size * 1000, SEED + number)}
        items += [Item("question", (system, {"role": "user", "content": question}), later=index > 0)
                  for index, question in enumerate(QUESTIONS[:scale.questions_per_document])]
    return items


def _summaries(scale: Scale) -> list[Item]:
    texts = [document(size * 1000, SEED + 100 + n) for n, size in enumerate(scale.summary_sizes)]
    return [Item("summary", _user(map_prompt(text)), text=text) for text in texts]


def _nightly(scale: Scale) -> list[Item]:
    texts = [document(size * 1000, SEED + 200 + n) for n, size in enumerate(scale.nightly_sizes)]
    return [Item("nightly", _user(map_prompt(text)), text=text, name=f"report-{n:02d}.txt")
            for n, text in enumerate(texts)]


def _user(content: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": content},)


def check_mix(items: list[Item], naive_usd: list[float]) -> tuple[dict[str, float], list[str]]:
    """The mix's shares (``naive_usd``: each item's direct call, in order) and the promises it breaks."""
    total = sum(naive_usd) or 1.0
    shares = {
        "repeats": sum(i.kind == "repeat" for i in items) / len(items),
        "simple": sum(i.simple for i in items) / len(items),
        "documents_spend": sum(usd for i, usd in zip(items, naive_usd) if i.document) / total,
    }
    broken = []
    if shares["repeats"] > MAX_REPEAT_SHARE:
        broken.append(f"repeats are {shares['repeats']:.0%} of the items (at most {MAX_REPEAT_SHARE:.0%})")
    if shares["simple"] > MAX_SIMPLE_SHARE:
        broken.append(f"simple prompts are {shares['simple']:.0%} of the items (at most {MAX_SIMPLE_SHARE:.0%})")
    if shares["documents_spend"] < MIN_DOCUMENT_SPEND_SHARE:
        broken.append(f"documents are {shares['documents_spend']:.0%} of the naive spend "
                      f"(at least {MIN_DOCUMENT_SPEND_SHARE:.0%})")
    return shares, broken
