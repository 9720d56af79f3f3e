"""The simulator's Batch API model: stored files, input validation and the batch life cycle.

Plain Python with no HTTP, so the rules read in one place: which input lines
are valid (OpenAI's error codes: ``invalid_json_line``, ``duplicate_custom_id``,
``model_mismatch``, ...), how a batch's status follows from the time since it
was created, and how each request line is answered. Lines are answered by the
same ``read``/``answer`` functions as the synchronous endpoints; a
``[[sim:SPEC]]`` directive in a line's prompt turns that line into an error
line, counted with ``times=`` like any other request. Random fault rates do
not apply to batch lines.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field

from flowcloud.workers.core.errors import FaultSpecError

from .api import ENDPOINTS, BadRequest, empty_body, error_body
from .faults import TimesCounter, find_directive, parse_fault_spec

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
COMPLETION_WINDOW = "24h"
MAX_REQUESTS = 50_000
MAX_CUSTOM_ID = 64
# A failed batch lists the first problems found, not one per line of a huge file.
MAX_REPORTED_PROBLEMS = 20
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


@dataclass
class StoredFile:
    """An uploaded or generated file; batch input files carry what validation found."""

    filename: str
    purpose: str
    content: bytes
    id: str = field(default_factory=lambda: new_id("file-"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    requests: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": len(self.content), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": None, "status_details": None}


def problem(code: str, message: str, line: int | None = None, param: str | None = None) -> dict:
    """One entry of a failed batch's ``errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


def read_input_file(content: bytes) -> tuple[list[dict], list[dict]]:
    """Parse a batch input file: the request lines, and the problems that would fail a batch."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return [], [problem("invalid_file_format", "The file is not UTF-8 text.")]
    requests: list[dict] = []
    problems: list[dict] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            line = None
        found = check_line(line, number, seen, requests[0] if requests else None)
        problems.extend(found)
        if not found:
            requests.append(line)
            seen.add(line["custom_id"])
    if not requests and not problems:
        problems.append(problem("empty_file", "The input file contains no requests."))
    if len(requests) > MAX_REQUESTS:
        problems.append(problem("too_many_tasks", f"A batch may hold at most {MAX_REQUESTS} requests."))
    return requests, problems[:MAX_REPORTED_PROBLEMS]


def check_line(line: object, number: int, seen: set[str], first: dict | None) -> list[dict]:
    """The problems of one input line (empty when it is a valid request)."""
    if not isinstance(line, dict):
        return [problem("invalid_json_line", "This line is not parseable as a JSON object.", number)]
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return [problem("invalid_custom_id", f"custom_id must be a string of 1 to {MAX_CUSTOM_ID} characters.",
                        number, "custom_id")]
    if custom_id in seen:
        return [problem("duplicate_custom_id", f"The custom_id {custom_id!r} is used by an earlier line.",
                        number, "custom_id")]
    if line.get("method") != "POST":
        return [problem("invalid_method", "method must be POST.", number, "method")]
    if line.get("url") not in BATCH_ENDPOINTS:
        return [problem("invalid_url", f"url must be one of {', '.join(BATCH_ENDPOINTS)}.", number, "url")]
    body = line.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return [problem("missing_required_parameter", "body must be an object naming a model.", number, "body")]
    if first is not None and body["model"] != first["body"]["model"]:
        return [problem("model_mismatch", "All requests in a batch must use the same model.", number,
                        "body.model")]
    return []


@dataclass
class StoredBatch:
    """One batch: its request, its timing, and its outcome once it has one."""

    input_file: StoredFile
    endpoint: str
    delay: float
    window: float
    metadata: dict | None = None
    id: str = field(default_factory=lambda: new_id("batch_"))
    created_at: float = field(default_factory=time.time)
    status: str | None = None  # set once terminal, or while cancelling
    stamps: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict] = field(default_factory=list)

    def phase(self, now: float) -> str:
        """The status at ``now`` before any outcome is settled."""
        if self.status is not None:
            return self.status
        elapsed = now - self.created_at
        if elapsed < self.delay / 3:
            return "validating"
        if self.input_file.problems or self.url_problems():
            return "failed"
        if elapsed >= self.window and self.delay > self.window:
            return "expired"
        if elapsed < 2 * self.delay / 3:
            return "in_progress"
        return "finalizing" if elapsed < self.delay else "completed"

    def url_problems(self) -> list[dict]:
        return [problem("url_mismatch", f"The line's url must be the batch's endpoint {self.endpoint}.",
                        number, "url")
                for number, line in enumerate(self.input_file.requests, start=1) if line["url"] != self.endpoint]

    def as_json(self, now: float) -> dict:
        status = self.phase(now)
        stamps = dict(self.stamps)
        created = int(self.created_at)
        if status != "validating":
            stamps.setdefault("in_progress_at", created)
            if status in ("finalizing", "completed"):
                stamps.setdefault("finalizing_at", int(self.created_at + 2 * self.delay / 3))
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file.id, "completion_window": COMPLETION_WINDOW,
            "status": status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": created, "expires_at": created + int(self.window),
            **{name: stamps.get(name) for name in STAMPS},
            "request_counts": self.request_counts(status), "metadata": self.metadata,
        }

    def request_counts(self, status: str) -> dict[str, int]:
        if status in ("in_progress", "finalizing"):
            return {"total": len(self.input_file.requests), "completed": 0, "failed": 0}
        return dict(self.counts)

    @property
    def model(self) -> str | None:
        requests = self.input_file.requests
        return requests[0]["body"]["model"] if requests else None


STAMPS = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
          "cancelling_at", "cancelled_at")


def answer_line(line: dict, times: TimesCounter) -> tuple[dict, bool]:
    """Answer one request line: the output line, and whether it succeeded (2xx)."""
    endpoint = ENDPOINTS[line["url"]]
    body = line["body"]
    try:
        call = endpoint.read(body)
        spec_text = find_directive(call.texts)
        spec = parse_fault_spec(spec_text) if spec_text is not None else None
    except (BadRequest, FaultSpecError) as exc:
        return response_line(line, 400, error_body(400, str(exc))), False
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).digest()
    if spec is None or not times.fires(spec, digest) or spec.name == "slow":
        return response_line(line, 200, endpoint.answer(body, call)), True
    if spec.status is not None:
        return response_line(line, spec.status, error_body(spec.status)), False
    if spec.name == "reset":
        return error_line(line, "server_error", "The request was dropped before it was answered (simulated)."), False
    # malformed and empty: a 200 whose body is not a usable answer.
    return response_line(line, 200, empty_body(body, endpoint)), True


def response_line(line: dict, status: int, body: dict) -> dict:
    response = {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": body}
    return {"id": new_id("batch_req_"), "custom_id": line["custom_id"], "response": response, "error": None}


def error_line(line: dict, code: str, message: str) -> dict:
    """A line for a request that got no HTTP answer at all (expired, cancelled, dropped)."""
    return {"id": new_id("batch_req_"), "custom_id": line["custom_id"], "response": None,
            "error": {"code": code, "message": message}}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode("utf-8")
