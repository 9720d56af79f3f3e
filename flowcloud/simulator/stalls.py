"""Answers that start and never finish: the ``hang`` and ``trickle`` faults.

``hang`` sends the status line and headers, with the ``Content-Length`` of the
whole answer, then half of the body, and goes silent: a client's read timeout
is what ends it. ``trickle`` sends a chunked body that never ends, a space
(valid JSON white space) every ``TRICKLE_INTERVAL`` seconds, so every read
returns in time and only a bound on the whole call ends it. Both stop as soon
as the client leaves, and give up after ``STALL_LIMIT`` seconds whatever it
does; the response they return is the one already sent. This module only
writes bytes; which request gets a stall is ``faults``' decision.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from .faults import STALL_LIMIT, TRICKLE_INTERVAL

# How often a silent answer looks whether its client is still there.
POLL_SECONDS = 0.1


def gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def hang(request: web.Request, answer: dict, headers: dict[str, str]) -> web.StreamResponse:
    """Half of ``answer`` under headers promising all of it, then silence until the client leaves."""
    body = json.dumps(answer).encode()
    response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    deadline = time.monotonic() + STALL_LIMIT
    while not gone(request) and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
    _drop(request)
    return response


async def trickle(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """The start of an answer, then a space every ``TRICKLE_INTERVAL`` seconds, chunked, until the client leaves."""
    response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    deadline = time.monotonic() + STALL_LIMIT
    try:
        await response.write(b'{"id": "chatcmpl-sim", "choices": [')
        while not gone(request) and time.monotonic() < deadline:
            await asyncio.sleep(TRICKLE_INTERVAL)
            await response.write(b" ")
    except (ConnectionError, RuntimeError):
        pass  # the client left mid-write (aiohttp raises either, by version)
    _drop(request)
    return response


def _drop(request: web.Request) -> None:
    # The answer was never finished: the connection cannot carry another one.
    if request.transport is not None:
        request.transport.abort()
