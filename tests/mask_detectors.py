"""Detectors a test's configuration names (``mask.detectors``), imported by the masker as any site's own would be."""

from __future__ import annotations

import re
from typing import Iterator

TICKET = re.compile(r"\bTCK-\d{6}\b")


def tickets(text: str) -> Iterator[tuple[int, int]]:
    """A site's own kind of value: ticket numbers such as TCK-123456."""
    for match in TICKET.finditer(text):
        yield match.start(), match.end()


def broken(text: str) -> Iterator[tuple[int, int]]:
    """A detector that fails on every text, quoting it, as a buggy one might."""
    raise RuntimeError(f"detector crashed on {text!r}")
