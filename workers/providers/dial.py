"""urllib3 pools whose every connection passes the SSRF guard where it is opened.

``guarded_pool`` is what the adapters' ``make_pool`` and the alert webhooks use:
a ``PoolManager`` whose connections ask ``flowcloud.workers.core.ssrf`` for the
address to dial (resolving the name once, judging every answer) and open their
socket to that exact address, while the Host header, TLS SNI and the
certificate check keep the name the URL gave. No second DNS answer can slip in
between the judgement and the connection. A refusal raises ``AddressRefused``
before any packet leaves; a name that does not resolve is urllib3's
``NameResolutionError``, a connection error like any other.

Through a proxy (``https_proxy`` and the like) it is the proxy that resolves and
dials: the target is judged before the request, the proxy itself (the
environment's choice) is not.
"""

from __future__ import annotations

import socket
import sys
from functools import partial
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.response import BaseHTTPResponse
from urllib3.util import connection

from flowcloud.workers.core.ssrf import Destination, Guard


class GuardedConnection(HTTPConnection):
    """An HTTP connection whose socket goes only to an address its guard judged."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        self.guard = guard
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        # urllib3's own, but for the addresses: judged by the guard instead of resolved by create_connection.
        try:
            destination = self.guard.check_host(self._dns_host, self.port)
            sock = self._connect_to_first(destination)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except socket.timeout as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        return sock

    def _connect_to_first(self, destination: Destination) -> socket.socket:
        """A socket to the first judged address that answers: IPv6 first may be unreachable from here."""
        failure: OSError | None = None
        for address in destination.addresses:
            try:
                return connection.create_connection((str(address), self.port), self.timeout,
                                                    source_address=self.source_address,
                                                    socket_options=self.socket_options)
            except OSError as exc:  # a timeout too: the next address may answer, as urllib3's own loop does
                failure = exc
        raise failure or OSError(f"no address to connect to for {destination.host}")


class GuardedHTTPSConnection(GuardedConnection, HTTPSConnection):
    """TLS over a guarded socket: SNI and the certificate check use the URL's name (``self.host``)."""


class GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedConnection


class GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedPoolManager(PoolManager):
    """A ``PoolManager`` for one dialler: the URL's scheme and form judged per request, its address per
    connection. Redirects are the caller's to refuse (``redirect=False``): they are never followed here."""

    def __init__(self, guard: Guard, **options: Any) -> None:
        super().__init__(**options)
        self.guard = guard
        # The pools pass unknown keywords on to their connections: that is how the guard reaches them.
        self.pool_classes_by_scheme = {"http": partial(GuardedHTTPPool, guard=guard),
                                       "https": partial(GuardedHTTPSPool, guard=guard)}

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> BaseHTTPResponse:
        self.guard.check_url(url)
        return super().urlopen(method, url, redirect=False, **kw)


class GuardedProxyManager(ProxyManager):
    """Through a proxy the proxy dials: the target is judged, resolution included, before each request."""

    def __init__(self, proxy_url: str, guard: Guard, **options: Any) -> None:
        super().__init__(proxy_url, **options)
        self.guard = guard

    def urlopen(self, method: str, url: str, redirect: bool = True, **kw: Any) -> BaseHTTPResponse:
        try:
            self.guard.check(url)
        except socket.gaierror:
            pass  # a name only the proxy can resolve: it is the proxy's to dial, and to fail
        return super().urlopen(method, url, redirect=False, **kw)


def guarded_pool(guard: Guard, proxy: str | None = None, **options: Any) -> PoolManager:
    """Pooled connections for ``guard``'s dialler, straight or through ``proxy``."""
    return GuardedProxyManager(proxy, guard, **options) if proxy else GuardedPoolManager(guard, **options)
