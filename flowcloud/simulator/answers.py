"""Deterministic content for the simulator: answers, token counts, embeddings.

Everything here is a pure function of its arguments, so tests can compute the
exact text or vector the simulator will send without talking to it. Nothing
here knows about HTTP, faults or timing.
"""

from __future__ import annotations

import hashlib
import math
import struct

ANSWER_PREFIX = "Simulated answer to: "
PROMPT_ECHO_CHARS = 80
CHARS_PER_TOKEN = 4
DEFAULT_EMBEDDING_DIMENSIONS = 16


def answer_for(prompt: str) -> str:
    """Return the simulator's answer to ``prompt``.

    The answer echoes the prompt (whitespace collapsed, cut to 80 characters)
    and ends with 8 hex characters of its SHA-256, so two prompts that differ
    only past the echoed part still get different answers.
    """
    echo = " ".join(prompt.split())[:PROMPT_ECHO_CHARS]
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:8]
    return f"{ANSWER_PREFIX}{echo} [{digest}]"


def count_tokens(text: str) -> int:
    """Estimate the tokens in ``text``: one per four characters, at least one."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def truncate_to_tokens(text: str, max_tokens: int | None) -> tuple[str, bool]:
    """Cut ``text`` to roughly ``max_tokens`` tokens.

    Returns the text and whether it was cut, which decides between the
    finish reasons "length" and "stop".
    """
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return text, False
    return text[: max_tokens * CHARS_PER_TOKEN], True


def embedding_for(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """Return a unit-length vector of ``dimensions`` floats derived from ``text``.

    Equal texts give equal vectors; the values carry no meaning beyond that.
    """
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        seed = f"{block}:{text}".encode("utf-8")
        digest = hashlib.sha256(seed).digest()
        # Eight unsigned 32-bit words per digest, mapped onto [-1, 1].
        values.extend(word / 0x7FFFFFFF - 1.0 for word in struct.unpack(">8I", digest))
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
