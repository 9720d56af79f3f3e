"""The HTTP boundary of the adapter layer: pooled sessions and the one place
where ``requests`` failures and error statuses become flowcloud errors.

Adapters call ``post_json`` (or ``send`` and ``json_object`` for other methods and
bodies) and get a decoded JSON object or a ``ProviderError``; no ``requests``
exception escapes this module.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter

from workers.errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    TransportError,
    status_error_class,
)
from workers.guard import redact
from workers.retry import parse_retry_after

log = logging.getLogger(__name__)

# Most specific first: ConnectTimeout is both a Timeout and a ConnectionError.
TRANSPORT_ERRORS: list[tuple[type[Exception], type[TransportError], str]] = [
    (requests.exceptions.Timeout, ProviderTimeout, "timed out"),
    (requests.exceptions.ConnectionError, ProviderConnectionError, "connection failed"),
    (requests.exceptions.ChunkedEncodingError, ProviderConnectionError, "connection broke mid-answer"),
    (requests.exceptions.RequestException, TransportError, "request failed"),
]
ERROR_TEXT_LIMIT = 300


def make_session(pool_size: int, base_url: str) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host.

    Sized to the worker's concurrency so every in-flight call reuses a warm
    connection instead of opening (and TLS-handshaking) a new one. Retries are
    ours, decided per job, so urllib3's own are off. Proxy and CA settings are
    read from the environment once here: requests would re-read them on every call.
    """
    session = requests.Session()
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(base_url)
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0, pool_block=False)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# Told of every provider request once it ends: (provider, payload, the error or None, seconds).
# The worker sets it at start to feed its metrics (workers.hooks); unset, nothing is observed.
request_observer: Callable[[str, dict[str, Any], BaseException | None, float], None] | None = None


def observed(post: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Report each call of ``post(session, url, payload, *, provider, ...)`` to ``request_observer``;
    an observer that fails is logged and never changes the call's outcome."""

    @functools.wraps(post)
    def call(session: requests.Session, url: str, payload: dict[str, Any], *, provider: str, **options: Any):
        started = time.monotonic()
        error: BaseException | None = None
        try:
            return post(session, url, payload, provider=provider, **options)
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
    session: requests.Session,
    url: str,
    payload: dict[str, Any],
    *,
    provider: str,
    headers: dict[str, str],
    timeout: tuple[float, float],
) -> dict[str, Any]:
    """POST ``payload`` and return the decoded JSON object, or raise a classified ``ProviderError``."""
    response = send(session, "POST", url, provider=provider, headers=headers, timeout=timeout, json=payload)
    return json_object(response, provider)


def transport_error(exc: requests.exceptions.RequestException, provider: str) -> TransportError:
    for caught, error_class, what in TRANSPORT_ERRORS:
        if isinstance(exc, caught):
            log.debug("%s: %s (%s)", provider, what, type(exc).__name__)
            return error_class(f"{provider}: {what} ({type(exc).__name__})", provider=provider)
    raise AssertionError("RequestException is the last row of TRANSPORT_ERRORS")


def status_error(response: requests.Response, provider: str, request_id: str | None) -> ProviderError:
    status = response.status_code
    error_class = status_error_class(status)
    retry_after = parse_retry_after(response.headers, now=time.time())
    detail = error_detail(response)
    message = f"{provider} answered {status}{': ' + detail if detail else ''}"
    if status == 401:
        message = f"{provider} rejected the API key (401): check the variable named in api_key_env"
    log.debug("%s: status %s, retry-after %s", provider, status, retry_after)
    return error_class(
        message, provider=provider, status=status, request_id=request_id, retry_after=retry_after
    )


def error_detail(response: requests.Response) -> str:
    """The provider's own error message, redacted and shortened: providers sometimes quote keys."""
    try:
        body = response.json()
        detail = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else response.text
    return redact(" ".join(text.split()))[:ERROR_TEXT_LIMIT]


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    provider: str,
    headers: dict[str, str],
    timeout: tuple[float, float],
    **request_args: Any,
) -> requests.Response:
    """Any request (a GET, a multipart upload, a download) with the same translation as ``post_json``:
    the 2xx response, or a classified ``ProviderError``. ``request_args`` go to ``session.request``."""
    try:
        response = session.request(method, url, headers=headers, timeout=timeout, **request_args)
    except requests.exceptions.RequestException as exc:
        raise transport_error(exc, provider) from exc
    if response.status_code >= 400:
        raise status_error(response, provider, response.headers.get("x-request-id"))
    return response


def json_object(response: requests.Response, provider: str) -> dict[str, Any]:
    """The response's body as a JSON object, or ``MalformedResponse``."""
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError as exc:
        raise MalformedResponse(
            f"{provider} answered {response.status_code} with a body that is not JSON",
            provider=provider, status=response.status_code, request_id=request_id,
        ) from exc
    if not isinstance(body, dict):
        raise MalformedResponse(
            f"{provider} answered with JSON that is not an object",
            provider=provider, status=response.status_code, request_id=request_id,
        )
    return body
