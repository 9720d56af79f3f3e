"""The simulator's aiohttp application: API routes, faults and latency.

``make_app`` builds an application that answers the API routes in ``ROUTES``
(OpenAI's and Azure's from ``api``, Anthropic's Messages API from ``messages``),
the Batch API (``batches``: ``/v1/files``, ``/v1/batches``) and the ``/_sim``
control routes. Every request to a ``ROUTES`` route goes through ``handle_api``:
authenticate, read, choose a fault, wait, reply, count; each in its API's shapes.
Running the application (sockets, signals, threads) lives in ``runner``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import struct
import time
import uuid

from aiohttp import web

from flowcloud.workers.core.errors import FaultSpecError

from . import batches, control, stalls
from .api import AZURE_ENDPOINTS, ENDPOINTS, BadRequest, Call, Endpoint, model_of
from .messages import MESSAGES_ENDPOINTS, MODELS_ENDPOINT
from .faults import DEFAULT_SLOW_DELAY, FaultSpec
from .settings import Settings
from .state import STATE, SimulatorState
from .stats import RequestRecord

# Batched legacy completions can carry many long prompts in one body.
CLIENT_MAX_SIZE = 64 * 1024 * 1024
# Valid JSON up to the point it stops, so clients fail in their JSON decoder.
MALFORMED_BODY = '{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "message": '
ROUTES: dict[str, Endpoint] = {**ENDPOINTS, **AZURE_ENDPOINTS, **MESSAGES_ENDPOINTS}
# A path two APIs share, answered as the other API's endpoint when the request carries that API's header.
BY_HEADER: dict[str, tuple[str, Endpoint]] = {"/v1/models": ("anthropic-version", MODELS_ENDPOINT)}


def make_app(settings: Settings | None = None) -> web.Application:
    """Build the simulator application; ``settings`` default to ``Settings.build()``."""
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[STATE] = SimulatorState(settings if settings is not None else Settings.build())
    for path, endpoint in ROUTES.items():
        app.router.add_route(endpoint.method, path,
                             functools.partial(handle_api, endpoint=endpoint, variant=BY_HEADER.get(path)))
    batches.install(app)
    control.add_routes(app.router)
    return app


async def handle_api(request: web.Request, endpoint: Endpoint,
                     variant: tuple[str, Endpoint] | None = None) -> web.StreamResponse:
    """Answer one API request and record it, whatever happens to it."""
    if variant is not None and request.headers.get(variant[0]):
        endpoint = variant[1]
    state = request.app[STATE]
    record = state.stats.begin(request.path)
    try:
        response = await _respond(request, endpoint, state, record)
        if response is None:
            # The connection is gone; aiohttp needs a response object regardless.
            return web.Response(status=499)
        record.status = response.status
        if not response.prepared:
            response.headers[endpoint.request_id_header] = f"req_{uuid.uuid4().hex}"
        return response
    finally:
        state.stats.finish(record)


async def _respond(
    request: web.Request, endpoint: Endpoint, state: SimulatorState, record: RequestRecord
) -> web.StreamResponse | None:
    raw = await request.read()
    record.key = state.accepted_key(request.headers, endpoint.auth)
    if not state.authorised(request.headers, endpoint.auth):
        return _error(endpoint, 401)
    try:
        _check_required(request, endpoint)
        # A list (a GET) is answered from what the simulator serves, not from a request body.
        body = {"models": list(state.behaviour.models)} if endpoint.method == "GET" else _decode(raw)
        if "deployment" in request.match_info:  # Azure's path names the model
            body.setdefault("model", request.match_info["deployment"])
        call = endpoint.read(body)
        record.prompt = call.log_text
        fault = state.choose_fault(request.headers, call.texts, raw)
    except (BadRequest, FaultSpecError) as exc:
        return _error(endpoint, 400, str(exc))
    record.fault = None if fault is None else str(fault)
    delay = state.behaviour.delay()
    if delay > 0:
        await asyncio.sleep(delay)
    if fault is not None:
        return await _apply_fault(request, fault, endpoint, body, call, state)
    return web.json_response(_answer(state, endpoint, body, call))


def _answer(state: SimulatorState, endpoint: Endpoint, body: dict, call: Call) -> dict:
    """The endpoint's success body, with the prompt's cached tokens where the endpoint reports them."""
    answer = endpoint.answer(body, call)
    if endpoint.report_cached is not None:
        endpoint.report_cached(answer, state.prompt_cache.read_and_store(model_of(body), call.texts))
    return answer


def _decode(raw: bytes) -> dict:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _check_required(request: web.Request, endpoint: Endpoint) -> None:
    for header in endpoint.headers:
        if not request.headers.get(header):
            raise BadRequest(f"{header}: header is required")
    for name in endpoint.query:
        if not request.query.get(name):
            raise BadRequest(f"Missing required query parameter: {name}")


def _error(endpoint: Endpoint, status: int, message: str | None = None, headers: dict | None = None) -> web.Response:
    return web.json_response(endpoint.error(status, message), status=status, headers=headers)


async def _apply_fault(
    request: web.Request, fault: FaultSpec, endpoint: Endpoint, body: dict, call: Call, state: SimulatorState,
) -> web.StreamResponse | None:
    """Turn ``fault`` into a response, or None when the connection was aborted."""
    delay = fault.delay if fault.delay is not None else (DEFAULT_SLOW_DELAY if fault.name == "slow" else 0.0)
    if delay > 0:
        await asyncio.sleep(delay)
    headers = fault.headers(time.time())
    if fault.status is not None:
        return _error(endpoint, fault.status, headers=headers)
    if fault.name == "reset":
        abort_connection(request)
        return None
    if fault.name == "hang":
        return await stalls.hang(request, _answer(state, endpoint, body, call), _with_id(endpoint, headers))
    if fault.name == "trickle":
        return await stalls.trickle(request, _with_id(endpoint, headers))
    if fault.name == "malformed":
        return web.Response(text=MALFORMED_BODY, content_type="application/json", headers=headers)
    if fault.name == "empty":
        return web.json_response(endpoint.empty(body, endpoint), headers=headers)
    return web.json_response(_answer(state, endpoint, body, call), headers=headers)


def _with_id(endpoint: Endpoint, headers: dict[str, str]) -> dict[str, str]:
    # A streamed answer's headers leave before handle_api could add the id.
    return {**headers, endpoint.request_id_header: f"req_{uuid.uuid4().hex}"}


def abort_connection(request: web.Request) -> None:
    """Drop the client's connection with a TCP reset and no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 makes the close send RST instead of FIN: a reset, not a clean hang-up.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
