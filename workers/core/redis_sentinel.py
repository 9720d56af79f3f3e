"""A Redis Sentinel group named by one URL, in the spellings each library wants it.

flowcloud's spelling is ``sentinel://[user:password@]host:port[,host:port...]/master_name[/db]``:
the sentinels to ask, the name they monitor the primary under, and the database.
The login is the data nodes' (their ``requirepass``); the sentinels are asked
without one. kombu and Celery's result backend want the same group as
``sentinel://:password@host:port/db;sentinel://...`` with the master's name in
their transport options, and redis-py as ``Sentinel(...).master_for(name)``
(which Beat hands RedBeat). This module
only parses and spells; ``redis_conn.connect`` makes the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

SCHEME = "sentinel"
DEFAULT_PORT = 26379
FORM = "sentinel://[user:password@]host:port[,host:port...]/master_name[/db]"
# How long one sentinel may take to answer before the next is asked: a dead one must not hold a failover up.
SENTINEL_TIMEOUT = 0.5


@dataclass(frozen=True)
class SentinelGroup:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def login(self) -> dict[str, str]:
        """The data nodes' credentials, as redis-py takes them."""
        return {k: v for k, v in (("username", self.username), ("password", self.password)) if v}

    def kombu_url(self, login: bool = True) -> str:
        """The group as kombu's Sentinel transport and Celery's Sentinel result backend read it: one
        ``sentinel://`` URL per sentinel joined by ``;``, each with the login and the database."""
        userinfo = ""
        if login and (self.password or self.username):
            userinfo = f"{quote(self.username or '', safe='')}:{quote(self.password or '', safe='')}@"
        return ";".join(f"sentinel://{userinfo}{host}:{port}/{self.db}" for host, port in self.sentinels)

    def transport_options(self) -> dict[str, Any]:
        """What kombu, Celery's result backend and Flower need beside ``kombu_url``."""
        return {"master_name": self.master_name, "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT}}


def is_sentinel(url: str) -> bool:
    return url.startswith(SCHEME + "://")


def celery_url(url: str) -> str:
    """``url`` as kombu and Celery's result backend read it: a group in their ``;`` spelling, else as is."""
    return parse(url).kombu_url() if is_sentinel(url) else url


def transport_options(url: str) -> dict[str, Any]:
    """The transport options a group's ``celery_url`` needs beside it (none for other URLs)."""
    return parse(url).transport_options() if is_sentinel(url) else {}


def parse(url: str) -> SentinelGroup:
    """The group ``url`` names; ValueError (naming no password) when it is not in flowcloud's form."""
    rest = url.removeprefix(SCHEME + "://").partition("?")[0]
    userinfo, _, rest = rest.rpartition("@") if "@" in rest else ("", "", rest)
    hosts, _, path = rest.partition("/")
    parts = [part for part in path.split("/") if part]
    if not hosts or not parts or len(parts) > 2:
        raise ValueError(f"a Sentinel URL is {FORM}")
    user, _, password = userinfo.partition(":")
    return SentinelGroup(tuple(_address(host) for host in hosts.split(",")), unquote(parts[0]),
                         _db(parts[1]) if len(parts) == 2 else 0, unquote(user) or None, unquote(password) or None)


def _address(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host or (colon and not port.isdigit()):
        raise ValueError(f"{text!r} is no sentinel address (host:port); a Sentinel URL is {FORM}")
    return host, int(port) if port else DEFAULT_PORT


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"database {text!r} must be a number; a Sentinel URL is {FORM}")
    return int(text)
