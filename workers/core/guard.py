"""Keeps provider keys out of everything flowcloud writes: records, errors and log lines.

Keys are read from the environment only in the worker, at call time, and
registered here as they are read; ``redact`` then blanks them wherever text
leaves the process. Tasks carry provider names, never keys.
"""

from __future__ import annotations

import logging

MASK = "[redacted]"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    # Very short values would blank ordinary words; real keys are long.
    if value and len(value) >= 8:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactSecrets(logging.Filter):
    """A logging filter that blanks known secrets in each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
