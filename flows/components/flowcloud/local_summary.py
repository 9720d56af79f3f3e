"""Local Summary: an extractive summary made in the Langflow process, with no model call.

For texts short enough that a cloud call is not worth its latency and cost:
the sentences that carry the text's most frequent words are kept, in their
original order. Nothing leaves the process and nothing is billed. Its Details
output has the same shape a Summary Report reads from Cloud Summarize's record.

Self-contained on purpose: a flow JSON embeds this file's source alone, so it
imports only the flowcloud client, its text functions (flowcloud.workers.core.present), lfx and the standard library.
"""

from __future__ import annotations

import re
from collections import Counter

from lfx.custom.custom_component.component import Component
from lfx.io import IntInput, MultilineInput, Output
from lfx.schema.data import Data
from lfx.schema.message import Message

from flowcloud.present import estimate_tokens

# A sentence ends at . ! ? followed by space, right after a CJK full stop, or at a line break.
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")
# A CJK ideograph counts as a word of its own: those scripts put no spaces between words.
WORD = re.compile(r"[\u4e00-\u9fff]|[^\W\u4e00-\u9fff]+")
# Words too common to say what a text is about; short Latin words are skipped as well.
STOPWORDS = frozenset(
    "the and that with for this from are was were have has had been which their they them its into also "
    "but not you your our can will would should could there than then these those such what when where".split()
)


def sentences(text: str) -> list[str]:
    """The text's sentences, whitespace tidied, empty ones dropped."""
    return [" ".join(part.split()) for part in SENTENCE_BREAK.split(text) if part and part.strip()]


def content_words(sentence: str) -> list[str]:
    """The words of a sentence that say what it is about, lower-cased."""
    words = WORD.findall(sentence.lower())
    return [w for w in words if (len(w) > 2 or not w.isascii()) and w not in STOPWORDS]


def extract_summary(text: str, max_sentences: int) -> tuple[list[str], int]:
    """The ``max_sentences`` sentences richest in the text's frequent words, in text order, and the total count.

    A sentence scores the mean frequency of its content words, so long
    sentences do not win by length alone; ties go to the earlier sentence.
    """
    found = sentences(text)
    if len(found) <= max_sentences:
        return found, len(found)
    frequency = Counter(word for sentence in found for word in content_words(sentence))

    def score(index: int) -> float:
        words = content_words(found[index])
        return sum(frequency[w] for w in words) / len(words) if words else 0.0

    best = sorted(range(len(found)), key=lambda i: (-score(i), i))[:max_sentences]
    return [found[i] for i in sorted(best)], len(found)


class LocalSummary(Component):
    display_name = "Local Summary"
    description = "Summarize a short text in this process by keeping its key sentences; no model call, no cost."
    icon = "text-quote"
    name = "LocalSummary"

    inputs = [
        MultilineInput(name="text", display_name="Text", required=True, info="The text to summarize."),
        IntInput(
            name="max_sentences", display_name="Max Sentences", value=3,
            info="How many of the text's sentences the summary keeps.",
        ),
    ]
    outputs = [
        Output(display_name="Summary", name="summary", method="summary_response"),
        Output(display_name="Details", name="details", method="details_response"),
    ]

    def _pre_run_setup(self) -> None:
        self._details = None

    def summary_response(self) -> Message:
        return Message(text=self._run()["text"])

    def details_response(self) -> Data:
        return Data(data=self._run())

    def _run(self) -> dict:
        if getattr(self, "_details", None) is None:
            text = self.text if isinstance(self.text, str) else ""
            if not text.strip():
                msg = "no text to summarize: the input is empty"
                raise ValueError(msg)
            if self.max_sentences < 1:
                msg = f"Max Sentences must be at least 1, not {self.max_sentences}"
                raise ValueError(msg)
            kept, total = extract_summary(text, self.max_sentences)
            self._details = {
                "route": "local", "text": " ".join(kept), "sentences_kept": len(kept), "sentences_total": total,
                "tokens_in": estimate_tokens(text), "cost_usd": 0.0,
            }
            self.status = f"local: {len(kept)} of {total} sentences kept · no model call"
        return self._details
