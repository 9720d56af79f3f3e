"""The ``/_sim`` control routes: statistics, request log, reset and runtime config.

These are for tests and operators, not for API clients: they are never
faulted, delayed or counted, and they stay open when an API key is set
(the key guards the API, and none of these routes reveals it).
"""

from __future__ import annotations

import json

from aiohttp import web

from flowcloud.workers.core.errors import ConfigError
from .state import STATE
from .stats import LOG_SIZE

DEFAULT_LOG_LIMIT = 100


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the control routes on ``router``."""
    router.add_get("/_sim/stats", get_stats)
    router.add_get("/_sim/requests", get_requests)
    router.add_post("/_sim/reset", post_reset)
    router.add_get("/_sim/config", get_config)
    router.add_post("/_sim/config", post_config)


def _bad_request(message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return web.json_response(body, status=400)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats.snapshot())


async def get_requests(request: web.Request) -> web.Response:
    """Recent API requests, optionally only those whose prompt contains ``contains``."""
    raw_limit = request.query.get("limit", str(DEFAULT_LOG_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LOG_SIZE:
        return _bad_request(f"limit must be a whole number from 1 to {LOG_SIZE}, got {raw_limit!r}", "limit")
    contains = request.query.get("contains")
    return web.json_response(request.app[STATE].stats.recent(contains, int(raw_limit)))


async def post_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(_config(request))


async def post_config(request: web.Request) -> web.Response:
    """Change latency, jitter, fault rates, seed, models or the accepted keys; all changes or none apply."""
    try:
        changes = json.loads(await request.read() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _bad_request("config body is not valid JSON")
    if not isinstance(changes, dict):
        return _bad_request("config body must be a JSON object")
    try:
        request.app[STATE].behaviour.update(changes)
    except ConfigError as exc:
        return _bad_request(str(exc), exc.field)
    return web.json_response(_config(request))


def _config(request: web.Request) -> dict:
    state = request.app[STATE]
    return {**state.behaviour.as_json(), "auth": bool(state.behaviour.keys)}
