"""The simulator's Batch API routes: ``/v1/files`` and ``/v1/batches``, in OpenAI's shapes.

A client uploads a JSONL file of requests (multipart, ``purpose=batch``),
creates a batch from it (``input_file_id``, ``endpoint``, ``completion_window:
24h``) and polls it. The batch is ``validating``, ``in_progress`` and
``finalizing`` for a third of the simulator's ``batch_delay`` each, counted
from its creation, then ``completed``: its output file holds the answered
requests, its error file the requests answered with an error status. An input
file that breaks the format makes the batch ``failed`` with errors naming the
lines; a batch slower than ``batch_window`` ``expired``; a cancelled one
``cancelled``. The rules live in ``batch_jobs``; this module is the HTTP side:
authentication (the same key as the other endpoints), routing, bookkeeping.
Files and batches live in memory for the life of the server.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from flowcloud.workers.core.errors import FaultSpecError

from .api import error_body
from .batch_jobs import (
    BATCH_ENDPOINTS, COMPLETION_WINDOW, TERMINAL, StoredBatch, StoredFile, answer_line, error_line, jsonl,
    read_input_file,
)
from .faults import HEADER, parse_fault_spec
from .state import STATE, SimulatorState

MAX_METADATA_PAIRS = 16
DEFAULT_LIST_LIMIT = 20
Handler = Callable[[web.Request], Awaitable[web.Response]]


class BatchStore:
    """Every file and batch one simulator server holds."""

    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}

    def add_file(self, stored: StoredFile) -> StoredFile:
        self.files[stored.id] = stored
        return stored

    def observe(self, batch: StoredBatch, state: SimulatorState) -> dict:
        """The batch as a client sees it now, settling its outcome the first time it has one."""
        now = time.time()
        status = batch.phase(now)
        if status in TERMINAL and batch.status != status:
            self._settle(batch, status, state)
        elif status == "cancelling":
            self._settle(batch, "cancelled", state)
        return batch.as_json(now)

    def _settle(self, batch: StoredBatch, status: str, state: SimulatorState) -> None:
        requests = batch.input_file.requests
        outputs, errors = [], []
        if status == "failed":
            batch.errors = batch.input_file.problems or batch.url_problems()
            requests = []
        answered = answered_before(batch, status, len(requests))
        for line in requests[:answered]:
            result, ok = answer_line(line, state.times)
            (outputs if ok else errors).append(result)
        if status in UNANSWERED:
            errors += [error_line(line, *UNANSWERED[status]) for line in requests[answered:]]
        batch.counts = {"total": len(requests), "completed": len(outputs), "failed": len(errors)}
        if outputs:
            batch.output_file_id = self.add_file(StoredFile("batch_output.jsonl", "batch_output", jsonl(outputs))).id
        if errors:
            batch.error_file_id = self.add_file(StoredFile("batch_errors.jsonl", "batch_output", jsonl(errors))).id
        batch.status = status
        batch.stamps[f"{status}_at"] = int(time.time())


def answered_before(batch: StoredBatch, status: str, total: int) -> int:
    """How many requests (from the first) were answered before the batch ended with ``status``."""
    if status == "completed":
        return total
    if status == "expired":
        # The window ran out this far into the work.
        return int(total * batch.window / batch.delay)
    return 0


# Why a request that was never executed has no answer: the line's error code and message.
UNANSWERED = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed: the batch was cancelled."),
}
BATCHES = web.AppKey("flowcloud_simulator_batches", BatchStore)


def install(app: web.Application) -> None:
    """Give ``app`` a batch store and register the Batch API routes."""
    app[BATCHES] = BatchStore()
    routes = [
        ("POST", "/v1/files", upload_file),
        ("GET", "/v1/files/{file_id}", get_file),
        ("DELETE", "/v1/files/{file_id}", delete_file),
        ("GET", "/v1/files/{file_id}/content", get_file_content),
        ("POST", "/v1/batches", create_batch),
        ("GET", "/v1/batches", list_batches),
        ("GET", "/v1/batches/{batch_id}", get_batch),
        ("POST", "/v1/batches/{batch_id}/cancel", cancel_batch),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, guarded(path, handler))


def guarded(path: str, handler: Handler) -> Handler:
    """Wrap ``handler`` with what every API request gets: counting, the key check, header faults."""

    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        # Counted under the route's pattern, so a thousand batch ids make one entry.
        record = state.stats.begin(path)
        try:
            response = await _checked(request, handler, state)
            record.status = response.status
            response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
            return response
        finally:
            state.stats.finish(record)

    return handle


async def _checked(request: web.Request, handler: Handler, state: SimulatorState) -> web.Response:
    if not state.authorised(request.headers):
        return error(401)
    spec_text = request.headers.get(HEADER)
    if spec_text is not None:
        try:
            spec = parse_fault_spec(spec_text)
        except FaultSpecError as exc:
            return error(400, str(exc))
        if spec.status is None:
            return error(400, f"only error statuses can be injected into Batch API calls, not {spec.name!r}")
        if state.times.fires(spec, await _request_digest(request)):
            return error(spec.status, headers=spec.headers(time.time()))
    return await handler(request)


async def _request_digest(request: web.Request) -> bytes:
    """What ``times=`` counts a request by: its method, path and (JSON) body."""
    # A multipart body is left unread: reading it here would leave nothing for request.post().
    body = b"" if request.content_type.startswith("multipart/") else await request.read()
    return hashlib.sha256(f"{request.method} {request.path} ".encode("utf-8") + body).digest()


def error(status: int, message: str | None = None, headers: dict | None = None) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


async def upload_file(request: web.Request) -> web.Response:
    """Store a multipart upload (fields ``purpose`` and ``file``); batch files are validated now."""
    if not request.content_type.startswith("multipart/"):
        return error(400, "upload the file as multipart/form-data with fields 'purpose' and 'file'")
    form = await request.post()
    purpose, upload = form.get("purpose"), form.get("file")
    if purpose != "batch":
        return error(400, f"'purpose' must be 'batch' (the simulator stores batch input only), got {purpose!r}")
    if not isinstance(upload, web.FileField):
        return error(400, "the form needs a 'file' part holding the JSONL requests")
    stored = StoredFile(upload.filename or "upload.jsonl", "batch", upload.file.read())
    stored.requests, stored.problems = read_input_file(stored.content)
    request.app[BATCHES].add_file(stored)
    return web.json_response(stored.as_json())


def _file(request: web.Request) -> StoredFile | None:
    return request.app[BATCHES].files.get(request.match_info["file_id"])


async def get_file(request: web.Request) -> web.Response:
    stored = _file(request)
    return web.json_response(stored.as_json()) if stored else _no_file(request)


async def get_file_content(request: web.Request) -> web.Response:
    stored = _file(request)
    if stored is None:
        return _no_file(request)
    return web.Response(body=stored.content, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    stored = request.app[BATCHES].files.pop(request.match_info["file_id"], None)
    if stored is None:
        return _no_file(request)
    return web.json_response({"id": stored.id, "object": "file", "deleted": True})


def _no_file(request: web.Request) -> web.Response:
    return error(404, f"No such File object: {request.match_info['file_id']}")


async def create_batch(request: web.Request) -> web.Response:
    """Start a batch over an uploaded input file."""
    try:
        body = json.loads(await request.read() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error(400, f"request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, "request body must be a JSON object")
    problem = _batch_request_problem(body)
    if problem:
        return error(400, problem)
    store = request.app[BATCHES]
    input_file = store.files.get(body["input_file_id"])
    if input_file is None:
        return error(404, f"No such File object: {body['input_file_id']}")
    if input_file.purpose != "batch":
        return error(400, f"file {input_file.id} has purpose {input_file.purpose!r}; a batch needs 'batch'")
    behaviour = request.app[STATE].behaviour
    batch = StoredBatch(input_file, body["endpoint"], behaviour.batch_delay, behaviour.batch_window,
                        body.get("metadata"))
    store.batches[batch.id] = batch
    return web.json_response(store.observe(batch, request.app[STATE]))


def _batch_request_problem(body: dict) -> str | None:
    if not isinstance(body.get("input_file_id"), str):
        return "'input_file_id' must be the id of an uploaded file"
    if body.get("endpoint") not in BATCH_ENDPOINTS:
        return f"'endpoint' must be one of {', '.join(BATCH_ENDPOINTS)}"
    if body.get("completion_window") != COMPLETION_WINDOW:
        return f"'completion_window' must be {COMPLETION_WINDOW!r}"
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and len(metadata) <= MAX_METADATA_PAIRS
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        return f"'metadata' must map at most {MAX_METADATA_PAIRS} strings to strings"
    return None


def _batch(request: web.Request) -> StoredBatch | None:
    return request.app[BATCHES].batches.get(request.match_info["batch_id"])


def _no_batch(request: web.Request) -> web.Response:
    return error(404, f"No such Batch object: {request.match_info['batch_id']}")


async def get_batch(request: web.Request) -> web.Response:
    batch = _batch(request)
    if batch is None:
        return _no_batch(request)
    return web.json_response(request.app[BATCHES].observe(batch, request.app[STATE]))


async def list_batches(request: web.Request) -> web.Response:
    """The newest batches first, at most ``limit`` (default 20)."""
    raw_limit = request.query.get("limit", str(DEFAULT_LIST_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        return error(400, f"limit must be a whole number from 1 to 100, got {raw_limit!r}")
    store, state = request.app[BATCHES], request.app[STATE]
    newest = sorted(store.batches.values(), key=lambda b: b.created_at, reverse=True)[: int(raw_limit)]
    data = [store.observe(batch, state) for batch in newest]
    return web.json_response({"object": "list", "data": data, "has_more": len(store.batches) > len(data),
                              "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})


async def cancel_batch(request: web.Request) -> web.Response:
    """Cancel a batch that has not finished: ``cancelling`` now, ``cancelled`` when next read."""
    batch = _batch(request)
    if batch is None:
        return _no_batch(request)
    status = batch.phase(time.time())
    if status in TERMINAL or status == "cancelling":
        return error(400, f"Cannot cancel a batch with status {status!r}.")
    batch.status = "cancelling"
    batch.stamps["cancelling_at"] = int(time.time())
    return web.json_response(batch.as_json(time.time()))
