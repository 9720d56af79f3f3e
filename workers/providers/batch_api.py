"""What a provider's Batch API offers, whatever its wire format: ``Provider.batch_api()`` returns a ``BatchAPI``.

Requests go up as one input file of request lines (``chat_request`` writes a
line in the provider's own format), a batch is created over it, polled, and its
results are read back. Each result becomes a ``RequestResult``: a
``Completion`` or a classified ``ProviderError``, classified as the same failure
on a normal call would be. A batch is described by a ``BatchInfo`` in OpenAI's
words for its status (``STATUSES``), which an adapter whose API uses others
translates. Nothing here knows about documents or rounds: ``flowcloud.workers.batch_runs.run``
does. OpenAI's own API is ``flowcloud.workers.providers.openai_batch``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flowcloud.workers.core.errors import ProviderError
from flowcloud.workers.providers.base import Completion

FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
STATUSES = FINISHED | {"validating", "in_progress", "finalizing", "cancelling"}


@dataclass(frozen=True)
class BatchInfo:
    """A batch as the provider last described it."""

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_counts: dict[str, int] = field(default_factory=dict)
    errors: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Whether the provider will do no more work on it (completed, failed, expired, cancelled)."""
        return self.status in FINISHED


@dataclass(frozen=True)
class RequestResult:
    """What became of one request of a batch: exactly one of ``completion`` and ``error`` is set."""

    custom_id: str
    completion: Completion | None = None
    error: ProviderError | None = None


class BatchAPI(ABC):
    """One provider's Batch API. Every call raises a classified ``ProviderError`` when it fails."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The provider's name, for messages."""

    @property
    @abstractmethod
    def completion_window(self) -> timedelta:
        """How long the provider may take to finish a batch: what a schedule must leave it."""

    @abstractmethod
    def chat_request(self, custom_id: str, model: str, messages: list[dict], **params: Any) -> dict:
        """One line of an input file: a chat completion request, answered under ``custom_id``."""

    @abstractmethod
    def upload(self, lines: list[dict], filename: str = "flowcloud-batch.jsonl") -> str:
        """Upload ``lines`` as a batch input file; returns the file id."""

    @abstractmethod
    def create(self, input_file_id: str, metadata: dict[str, str] | None = None) -> BatchInfo:
        """Start a batch of chat completions over an uploaded file."""

    @abstractmethod
    def get(self, batch_id: str) -> BatchInfo:
        """Poll a batch once."""

    @abstractmethod
    def cancel(self, batch_id: str) -> BatchInfo:
        """Ask the provider to stop a batch; it may still finish some requests."""

    @abstractmethod
    def results(self, batch: BatchInfo) -> dict[str, RequestResult]:
        """Every result a finished batch has, by custom_id."""

    @abstractmethod
    def batch_failure(self, batch: BatchInfo) -> ProviderError:
        """Why every request of a batch that failed as a whole failed (its input was refused)."""

    @abstractmethod
    def delete_file(self, file_id: str) -> None:
        """Delete an input, output or error file at the provider."""
