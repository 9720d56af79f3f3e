"""OpenAI's Batch API (``/v1/files`` and ``/v1/batches``), for OpenAI-compatible providers.

Requests go up as one JSONL file (``purpose=batch``), a batch is created over
it, polled, and its output and error files are read back line by line. Every
call goes through the adapter's ``request`` seam, so it runs on the provider's
pooled connections with its key and timeouts, and every failure goes through
the one translation in ``flowcloud.workers.providers.http``. An error status
in a result line is classified like the same status on a normal call; garbage
is a ``MalformedResponse``.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flowcloud.workers.core.errors import BadRequest, MalformedResponse, ProviderError, RequestTimeout, ServerError
from flowcloud.workers.core.errors import status_error_class
from flowcloud.workers.core.guard import redact
from flowcloud.workers.providers.base import Completion
from flowcloud.workers.providers.batch_api import STATUSES, BatchAPI, BatchInfo, RequestResult
from flowcloud.workers.providers.http import ERROR_TEXT_LIMIT, json_object
from flowcloud.workers.providers.pooled import optional_text

if TYPE_CHECKING:
    from flowcloud.workers.providers.openai import OpenAIProvider

log = logging.getLogger(__name__)

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"  # the only window OpenAI's Batch API offers
WINDOW = timedelta(hours=24)


class OpenAIBatchAPI(BatchAPI):
    """The Batch API of one OpenAI-compatible provider."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider

    @property
    def name(self) -> str:
        return self.provider.name

    @property
    def completion_window(self) -> timedelta:
        return WINDOW

    def chat_request(self, custom_id: str, model: str, messages: list[dict], **params: Any) -> dict:
        return {"custom_id": custom_id, "method": "POST", "url": CHAT_ENDPOINT,
                "body": {"model": model, "messages": messages, **params}}

    def upload(self, lines: list[dict], filename: str = "flowcloud-batch.jsonl") -> str:
        content = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        reply = self.provider.request("POST", "/files",
                                      fields={"purpose": "batch", "file": (filename, content, "application/jsonl")})
        return self._text(json_object(reply, self.name), "id")

    def create(self, input_file_id: str, metadata: dict[str, str] | None = None) -> BatchInfo:
        """Start a chat completions batch over an uploaded file, in the 24 h window."""
        payload: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": CHAT_ENDPOINT,
                                   "completion_window": COMPLETION_WINDOW}
        if metadata:
            payload["metadata"] = metadata
        return self._batch_at("POST", "/batches", payload)

    def get(self, batch_id: str) -> BatchInfo:
        return self._batch_at("GET", f"/batches/{batch_id}")

    def cancel(self, batch_id: str) -> BatchInfo:
        return self._batch_at("POST", f"/batches/{batch_id}/cancel")

    def content(self, file_id: str) -> list[dict]:
        """The lines of a JSONL file; a line that is not a JSON object is a ``MalformedResponse``."""
        reply = self.provider.request("GET", f"/files/{file_id}/content")
        lines = []
        for number, raw in enumerate(reply.text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (ValueError, RecursionError):
                line = None
            if not isinstance(line, dict):
                raise self._malformed(f"line {number} of file {file_id} is not a JSON object")
            lines.append(line)
        return lines

    def delete_file(self, file_id: str) -> None:
        self.provider.request("DELETE", f"/files/{file_id}")

    def results(self, batch: BatchInfo) -> dict[str, RequestResult]:
        """Every result a finished batch has, by custom_id: its output file, then its error file."""
        found: dict[str, RequestResult] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for line in self.content(file_id):
                    result = self.read_result(line)
                    if result is not None:
                        found[result.custom_id] = result
        return found

    def read_result(self, line: dict) -> RequestResult | None:
        """One output or error line as a RequestResult; None for a line naming no request."""
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str):
            log.warning("%s: a batch result line names no custom_id; ignored", self.name)
            return None
        response = line.get("response")
        try:
            if isinstance(response, dict):
                return RequestResult(custom_id, completion=self._completion(response))
            return RequestResult(custom_id, error=self._line_error(line.get("error")))
        except ProviderError as exc:
            return RequestResult(custom_id, error=exc)

    def batch_failure(self, batch: BatchInfo) -> ProviderError:
        reasons = "; ".join(batch.errors) or "no reason given"
        return BadRequest(redact(f"{self.name} refused batch {batch.id}: {reasons}")[:ERROR_TEXT_LIMIT],
                          provider=self.name)

    # -- reading the provider's answers defensively: garbage is a MalformedResponse, never a crash

    def _completion(self, response: dict) -> Completion:
        status, body = response.get("status_code"), response.get("body")
        request_id = response.get("request_id") if isinstance(response.get("request_id"), str) else None
        if not isinstance(status, int) or not isinstance(body, dict):
            raise self._malformed("a result line has no status_code or body")
        if status >= 400:
            detail = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else None
            message = f"{self.name} answered {status}" + (f": {detail}" if isinstance(detail, str) else "")
            raise status_error_class(status)(redact(message)[:ERROR_TEXT_LIMIT], provider=self.name,
                                             status=status, request_id=request_id)
        return self.provider.read_chat(body, "", request_id)

    def _line_error(self, error: object) -> ProviderError:
        if not isinstance(error, dict):
            raise self._malformed("a result line has neither a response nor an error")
        code, message = str(error.get("code") or "unknown"), str(error.get("message") or "")
        text = redact(f"{self.name} did not run the request ({code}): {message}")[:ERROR_TEXT_LIMIT]
        if code == "batch_expired":
            return RequestTimeout(text, provider=self.name)
        if code == "batch_cancelled":
            return ProviderError(text, provider=self.name)
        return ServerError(text, provider=self.name)

    def _batch_at(self, method: str, path: str, payload: dict[str, Any] | None = None) -> BatchInfo:
        body = json_object(self.provider.request(method, path, payload), self.name)
        status = body.get("status")
        if not isinstance(status, str) or status not in STATUSES:
            raise self._malformed(f"batch status {status!r} is not one of the Batch API's")
        errors = body["errors"].get("data") if isinstance(body.get("errors"), dict) else None
        counts = body.get("request_counts") if isinstance(body.get("request_counts"), dict) else {}
        return BatchInfo(
            id=self._text(body, "id"), status=status,
            output_file_id=optional_text(body.get("output_file_id")) or None,
            error_file_id=optional_text(body.get("error_file_id")) or None,
            request_counts={k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)},
            errors=tuple(_describe(e) for e in errors if isinstance(e, dict)) if isinstance(errors, list) else (),
        )

    def _text(self, body: dict, key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise self._malformed(f"{key!r} is missing")
        return value

    def _malformed(self, what: str) -> MalformedResponse:
        return MalformedResponse(f"{self.name} sent an unreadable Batch API answer: {what}", provider=self.name)


def _describe(error: dict) -> str:
    line = f"line {error['line']}: " if isinstance(error.get("line"), int) else ""
    return f"{line}{error.get('message') or error.get('code') or 'invalid'}"
