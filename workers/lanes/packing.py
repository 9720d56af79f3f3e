"""Prompt packing: several short prompts in one chat request, answered as one JSON list.

For chat models that have no list endpoint (``batch: pack`` in the model's
configuration). The request carries the prompts as a JSON array and asks for a
JSON array of answers of the same length. A reply is accepted only when it is
exactly that, so a model that wanders off the format costs one wasted call
(its jobs are then sent one by one), never an answer handed to the wrong job.
Pure functions: no Redis, no provider, no Celery.
"""

from __future__ import annotations

import json
import re

# The same words for every packed call, and the count only at the end, so the instruction is a prefix
# every packed request shares (a provider's prompt cache bills a shared prefix at its cached price).
INSTRUCTION = (
    "The user message is a JSON array of separate prompts. Answer each prompt on its own, "
    "as if it were the only one. Item i of your reply is the answer to prompt i, and nothing else. "
    "Reply with only a JSON array of {count} strings."
)
# Models often wrap JSON in a Markdown code fence even when told not to; the list inside still counts.
CODE_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


def packed_messages(prompts: list[str]) -> list[dict[str, str]]:
    """The chat messages that ask for ``prompts`` to be answered together."""
    return [
        {"role": "system", "content": INSTRUCTION.format(count=len(prompts))},
        {"role": "user", "content": json.dumps(prompts, ensure_ascii=False)},
    ]


def unpack_reply(reply: str, count: int) -> list[str] | None:
    """The ``count`` answers in a packed reply, in prompt order; None when it is not such a list."""
    text = reply.strip()
    fenced = CODE_FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        answers = json.loads(text)
    except (ValueError, RecursionError):  # a model may nest brackets past what the decoder follows
        return None
    if not isinstance(answers, list) or len(answers) != count:
        return None
    if not all(isinstance(answer, str) for answer in answers):
        return None
    return answers
