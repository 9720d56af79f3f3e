"""The HTTP boundary of the adapter layer: pooled connections and the one place
where transport failures and error statuses become flowcloud errors.

Adapters call ``post_json`` (or ``send`` and ``json_object`` for other methods and
bodies) and get a decoded JSON object or a ``ProviderError``; no urllib3
exception escapes this module. A call takes at most its connect plus its read
timeout (``Timeouts.call_seconds``) from start to the body's last byte, however
the provider sends it: an answer still arriving then is cut (``ProviderTimeout``).

urllib3 directly rather than requests: requests' own work per call (preparing
the request, merging session settings, hooks) was about a third of the CPU a
provider call cost a worker, on the path every job takes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import (
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.response import BaseHTTPResponse

from flowcloud.workers.core.errors import (
    AddressRefused,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    TransportError,
    status_error_class,
)
from flowcloud.workers.core.guard import redact
from flowcloud.workers.core.retry import parse_retry_after
from flowcloud.workers.core.ssrf import Guard
from flowcloud.workers.providers.dial import guarded_pool

log = logging.getLogger(__name__)

# Most specific first: urllib3's NewConnectionError is also a ConnectTimeoutError.
TRANSPORT_ERRORS: list[tuple[type[Exception], type[TransportError], str]] = [
    (NewConnectionError, ProviderConnectionError, "connection failed"),
    (Urllib3Timeout, ProviderTimeout, "timed out"),
    (ProtocolError, ProviderConnectionError, "connection broke mid-answer"),
    (ProxyError, ProviderConnectionError, "proxy failed"),
    (SSLError, ProviderConnectionError, "TLS failed"),
    (HTTPError, TransportError, "request failed"),
]
ERROR_TEXT_LIMIT = 300
# Where providers put the id support asks for: OpenAI and most others, Anthropic, Azure's API gateway.
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "apim-request-id")
# Bytes asked of one read of an answer's body: most answers arrive in one.
READ_CHUNK = 256 * 1024
# Which quota a 429 ran out of, when the provider says (OpenAI, Azure and most compatible APIs do).
QUOTA_HEADERS = {"x-ratelimit-remaining-requests": "requests", "x-ratelimit-remaining-tokens": "tokens"}


def make_pool(pool_size: int, base_url: str, guard: Guard) -> urllib3.PoolManager:
    """Pooled connections to ``base_url``'s host: ``pool_size`` kept per host, each one opened to the
    address ``guard`` judged (``flowcloud.workers.providers.dial``).

    Sized to the worker's concurrency so every in-flight call reuses a warm
    connection instead of opening (and TLS-handshaking) a new one. Retries and
    redirects are off: retries are ours, decided per job, and a redirect would
    take a request with the key in it to a host the configuration never named. The
    proxy (``https_proxy``, ``no_proxy``...) and CA bundle (``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``, else certifi's) are read from the environment once here.
    """
    options: dict[str, Any] = {
        "num_pools": 4, "maxsize": pool_size, "block": False, "retries": False,
        "cert_reqs": "CERT_REQUIRED",
        "ca_certs": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where(),
    }
    return guarded_pool(guard, environment_proxy(base_url), **options)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url``, or None (none set, or ``no_proxy`` covers it)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


@dataclass(frozen=True)
class Reply:
    """A provider's whole answer: status, headers (case-insensitive) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON; ``ValueError`` when it is not (nested too deep to decode included)."""
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deeply to decode") from None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


# Told of every provider request once it ends: (provider, payload, the error or None, seconds).
# The worker sets it at start to feed its metrics (flowcloud.tasks.hooks); unset, nothing is observed.
request_observer: Callable[[str, dict[str, Any], BaseException | None, float], None] | None = None
# Told of the headers of every reply to a request for a model, an error's too: (provider, model, headers).
# The worker's runtime sets it when a deployment has rate limits, which the provider's x-ratelimit-*
# headers tighten (flowcloud.workers.rate_limits); unset, nothing is read.
headers_observer: Callable[[str, str, Mapping[str, str]], None] | None = None


def observed(post: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Report each call of ``post(pool, url, payload, *, provider, ...)`` to ``request_observer``;
    an observer that fails is logged and never changes the call's outcome."""

    @functools.wraps(post)
    def call(pool: urllib3.PoolManager, url: str, payload: dict[str, Any], *, provider: str, **options: Any):
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return post(pool, url, payload, provider=provider, **options)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if request_observer is not None:
                try:
                    request_observer(provider, payload, error, time.monotonic() - started)
                except Exception:
                    log.warning("request observer failed; the request is not affected", exc_info=True)

    return call


@observed
def post_json(
    pool: urllib3.PoolManager,
    url: str,
    payload: dict[str, Any],
    *,
    provider: str,
    headers: dict[str, str],
    timeout: tuple[float, float],
) -> dict[str, Any]:
    """POST ``payload`` and return the decoded JSON object, or raise a classified ``ProviderError``."""
    model = payload.get("model")
    reply = send(pool, "POST", url, provider=provider, headers={**headers, "Content-Type": "application/json"},
                 timeout=timeout, body=json.dumps(payload).encode(), model=model if isinstance(model, str) else None)
    return json_object(reply, provider)


def transport_error(exc: HTTPError, provider: str) -> TransportError:
    for caught, error_class, what in TRANSPORT_ERRORS:
        if isinstance(exc, caught):
            log.debug("%s: %s (%s)", provider, what, type(exc).__name__)
            return error_class(f"{provider}: {what} ({type(exc).__name__})", provider=provider)
    raise AssertionError("HTTPError is the last row of TRANSPORT_ERRORS")


def status_error(reply: Reply, provider: str, request_id: str | None) -> ProviderError:
    status = reply.status
    error_class = status_error_class(status)
    retry_after = parse_retry_after(reply.headers, now=time.time())
    detail = error_detail(reply)
    message = f"{provider} answered {status}{': ' + detail if detail else ''}{quota_note(reply)}"
    if status == 401:
        message = f"{provider} rejected the API key (401)"  # the key pool names which (pooled.py)
    log.debug("%s: status %s, retry-after %s", provider, status, retry_after)
    return error_class(
        message, provider=provider, status=status, request_id=request_id, retry_after=retry_after
    )


def request_id_of(headers: Mapping[str, str]) -> str | None:
    return next((headers[name] for name in REQUEST_ID_HEADERS if headers.get(name)), None)


def quota_note(reply: Reply) -> str:
    """On a 429, which quota is spent (" (tokens quota spent)"), so a log says what to raise; else nothing."""
    if reply.status != 429:
        return ""
    spent = [what for header, what in QUOTA_HEADERS.items() if reply.headers.get(header, "").strip() == "0"]
    return f" ({' and '.join(spent)} quota spent)" if spent else ""


def error_detail(reply: Reply) -> str:
    """The provider's own error message, redacted and shortened: providers sometimes quote keys.

    OpenAI's ``{"error": {"message": ...}}`` and Anthropic's ``{"type": "error", "error":
    {"type": ..., "message": ...}}`` both keep it at ``error.message``; any other body is quoted as text.
    """
    try:
        body = reply.json()
        detail = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else reply.text
    return redact(" ".join(text.split()))[:ERROR_TEXT_LIMIT]


def send(
    pool: urllib3.PoolManager,
    method: str,
    url: str,
    *,
    provider: str,
    headers: dict[str, str],
    timeout: tuple[float, float],
    body: bytes | None = None,
    fields: dict[str, Any] | None = None,
    model: str | None = None,
) -> Reply:
    """Any request (a GET, a multipart upload of ``fields``, a download) with the same translation as
    ``post_json``: the whole 2xx reply, or a classified ``ProviderError``. A request for ``model`` has its
    reply's headers told to ``headers_observer``."""
    bound = timeout[0] + timeout[1]  # the provider's Timeouts.call_seconds
    deadline = time.monotonic() + bound
    limits = urllib3.Timeout(connect=timeout[0], read=timeout[1], total=bound)
    try:
        if fields is not None:
            response = pool.request(method, url, fields=fields, headers=headers, timeout=limits, redirect=False,
                                    preload_content=False)
        else:
            response = pool.urlopen(method, url, body=body, headers=headers, timeout=limits, redirect=False,
                                    preload_content=False)
        data = read_within(response, deadline, timeout[1])
    except HTTPError as exc:
        raise transport_error(exc, provider) from exc
    except CallOverran as exc:
        log.debug("%s: the answer was still coming after %g s; cut", provider, bound)
        raise ProviderTimeout(f"{provider}: the answer took longer than the call's bound of {bound:g} s "
                              "(connect + read timeout)", provider=provider) from exc
    reply = Reply(response.status, response.headers, data)
    if model is not None and headers_observer is not None:
        observe_headers(provider, model, reply.headers)
    if 300 <= reply.status < 400:
        raise redirect_refused(reply, url, provider)
    if reply.status >= 400:
        raise status_error(reply, provider, request_id_of(reply.headers))
    return reply


class CallOverran(Exception):
    """Internal to this module: the call's time ran out while its answer was still arriving."""


def read_within(response: BaseHTTPResponse, deadline: float, read_timeout: float) -> bytes:
    """The whole body, read by ``deadline`` (``time.monotonic()``) or not at all: ``CallOverran``.

    urllib3's read timeout bounds each read, so an answer that keeps sending a
    few bytes at a time would hold the worker's slot for ever. Each read here
    waits at most what is left of the call, and a connection cut mid-answer is
    closed, never handed back to the pool half read.
    """
    parts: list[bytes] = []
    finished = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallOverran()
            wait = min(read_timeout, left)
            if wait < read_timeout:  # else the read timeout urllib3 set (at most this) stands
                _limit_next_read(response, wait)
            try:
                chunk = response.read1(READ_CHUNK)
            except Urllib3Timeout:
                if wait < read_timeout:  # what ran out was the call's time, not the read's
                    raise CallOverran() from None
                raise
            parts.append(chunk)
            # A body of known length is done once it is all here: no read more to learn that.
            if not chunk or response.length_remaining == 0:
                finished = True
                return b"".join(parts)
    finally:
        if not finished:
            response.close()
        response.release_conn()


def _limit_next_read(response: BaseHTTPResponse, seconds: float) -> None:
    sock = getattr(response.connection, "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def redirect_refused(reply: Reply, url: str, provider: str) -> AddressRefused:
    """A 3xx is never followed: it would take the key, and the request, where no configuration sent them."""
    location = urlsplit(reply.headers.get("location", ""))
    target = location.hostname or "no location"
    return AddressRefused(provider=provider, host=urlsplit(url).hostname or "", address=None,
                          rule=f"answered {reply.status}, a redirect to {target}: redirects are not followed")


def observe_headers(provider: str, model: str, headers: Mapping[str, str]) -> None:
    try:
        headers_observer(provider, model, headers)  # type: ignore[misc]  # checked by the caller
    except Exception:
        log.warning("headers observer failed; the request is not affected", exc_info=True)


def json_object(reply: Reply, provider: str) -> dict[str, Any]:
    """The reply's body as a JSON object, or ``MalformedResponse``."""
    answer_id = request_id_of(reply.headers)
    try:
        body = reply.json()
    except ValueError as exc:
        raise MalformedResponse(
            f"{provider} answered {reply.status} with a body that is not JSON",
            provider=provider, status=reply.status, request_id=answer_id,
        ) from exc
    if not isinstance(body, dict):
        raise MalformedResponse(
            f"{provider} answered with JSON that is not an object",
            provider=provider, status=reply.status, request_id=answer_id,
        )
    return body
