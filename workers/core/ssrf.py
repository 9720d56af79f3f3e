"""The SSRF guard: which addresses an outbound URL may reach, judged before any packet leaves.

Every URL flowcloud dials (a provider's ``base_url``, an alert webhook) is judged
here, by the connection that is about to be opened
(``flowcloud.workers.providers.dial``), which then connects to the very address
that was judged: a second DNS answer never gets a say. The rules, in order:

- only ``http`` and ``https``, and no ``user:password@`` in the URL;
- the host as the C resolver reads it: an IP literal, IPv4 in any of
  ``inet_aton``'s forms (``0x7f000001``, ``2130706433``, ``0177.0.0.1``,
  ``127.1``), else every address the resolver answers;
- every address must pass ``RULES``; an IPv6 address carrying an IPv4 one
  (``::ffff:127.0.0.1``, NAT64, 6to4, Teredo) is judged by the IPv4 one too.

Loopback, private (RFC 1918, ``fc00::/7``) and CGNAT addresses pass only with
``allow_private`` (a provider's setting: the simulator, a local model server);
link-local, cloud metadata, multicast, unspecified, reserved and any other
non-public address never pass. This module judges and opens nothing: it
resolves names through the resolver it is given (``socket.getaddrinfo`` unless
a test passes its own).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import SplitResult, urlsplit

from flowcloud.workers.core.errors import AddressRefused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# socket.getaddrinfo's signature and answer: (family, type, proto, canonname, sockaddr) tuples.
Resolver = Callable[..., list[tuple[Any, ...]]]

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# Where clouds serve instance credentials: never a provider, whatever the configuration says.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",    # AWS ECS task credentials
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",    # AWS over IPv6
))
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 prefixes whose low 32 bits are an IPv4 address a gateway will reach.
IPV4_CARRIERS = (ipaddress.ip_network("::/96"), ipaddress.ip_network("64:ff9b::/96"))


@dataclass(frozen=True)
class Rule:
    """One class of address: its name, the test, and whether ``allow_private`` lets it pass."""

    name: str
    matches: Callable[[Address], bool]
    allowed_when_private: bool = False


# Most specific first: the metadata addresses are link-local or private too, and must say so.
RULES: tuple[Rule, ...] = (
    Rule("cloud metadata address", lambda a: a in METADATA),
    Rule("unspecified address", lambda a: a.is_unspecified),
    Rule("loopback address", lambda a: a.is_loopback, allowed_when_private=True),
    Rule("link-local address", lambda a: a.is_link_local),
    Rule("multicast address", lambda a: a.is_multicast),
    Rule("private address", lambda a: any(a in n for n in PRIVATE if n.version == a.version),
         allowed_when_private=True),
    Rule("carrier-grade NAT address (100.64.0.0/10)", lambda a: a.version == 4 and a in CGNAT,
         allowed_when_private=True),
    Rule("reserved address", lambda a: a.is_reserved),
    Rule("non-public address", lambda a: not a.is_global),
)


@dataclass(frozen=True)
class Destination:
    """Where a connection may go: the host as written, its port, and the addresses judged for it, in the
    resolver's order (a connection tries them in turn, as ``socket.create_connection`` would)."""

    host: str
    port: int
    addresses: tuple[Address, ...]

    @property
    def address(self) -> Address:
        """The first address: the one dialled when it answers."""
        return self.addresses[0]


@dataclass(frozen=True)
class Guard:
    """The judge for one dialler: ``name`` (a provider's, ``alert webhook``) names it in refusals."""

    name: str
    allow_private: bool = False
    resolver: Resolver = socket.getaddrinfo

    def check_url(self, url: str) -> SplitResult:
        """The URL's parts when its scheme and form may be dialled; its address is judged on connect."""
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError as exc:  # an unclosed [ in the host
            raise self.refused("(no host)", None, "not a URL") from exc
        if parts.scheme.lower() not in SCHEMES:
            raise self.refused(host or "(no host)", None, f"scheme {parts.scheme or 'none'!r} (only http and https)")
        if parts.username is not None or parts.password is not None:
            raise self.refused(host, None, "credentials in the URL (user:password@)")
        if not host:
            raise self.refused("(no host)", None, "no host in the URL")
        return parts

    def check(self, url: str) -> Destination:
        """The whole judgement of ``url``, resolution included, as a connection would make it."""
        parts = self.check_url(url)
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
        except ValueError as exc:
            raise self.refused(parts.hostname or "", None, "a port that is not a number in 0-65535") from exc
        return self.check_host(parts.hostname or "", port)

    def check_written(self, url: str) -> Destination | None:
        """What can be judged from ``url`` alone, without asking the resolver: its scheme, its form, and
        its address when the host is one; None when the host is a name (judged when it is dialled)."""
        parts = self.check_url(url)
        addresses = numeric_address(parts.hostname or "")
        if addresses is None:
            return None
        return self.check(url)

    def check_host(self, host: str, port: int) -> Destination:
        """The addresses to dial for ``host``: every one it stands for must pass, or none is dialled.

        A resolver failure (``socket.gaierror``) is left to the caller: it is a connection
        error, not a refusal.
        """
        addresses = numeric_address(host)
        if addresses is None:
            addresses = self.resolve(host, port)
        for address in addresses:
            self.judge(host, address)
        return Destination(host, port, tuple(addresses))

    def resolve(self, host: str, port: int) -> list[Address]:
        try:
            answers = self.resolver(host, port, type=socket.SOCK_STREAM)
        except (UnicodeError, ValueError) as exc:  # a label over 63 characters, a NUL: no name to look up
            raise socket.gaierror(socket.EAI_NONAME, f"{host!r} is not a name that resolves") from exc
        found = [ipaddress.ip_address(str(sockaddr[0]).split("%")[0]) for *_, sockaddr in answers]
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} resolved to no address")
        return list(dict.fromkeys(found))

    def judge(self, host: str, address: Address) -> None:
        """Raise ``AddressRefused`` unless ``address`` (and any IPv4 one it carries) may be dialled."""
        carried = carried_ipv4(address)
        candidates = [(v4, f" (carried in {address})") for v4 in carried]
        if not (carried and only_carries_ipv4(address)):
            candidates.append((address, ""))
        for candidate, within in candidates:
            rule = first_rule(candidate)
            if rule is not None and not (rule.allowed_when_private and self.allow_private):
                hint = (f"; set allow_private: true where {self.name} is configured to allow it"
                        if rule.allowed_when_private else "")
                raise self.refused(host, str(candidate), f"{rule.name}{within}{hint}")

    def refused(self, host: str, address: str | None, rule: str) -> AddressRefused:
        return AddressRefused(provider=self.name, host=host, address=address, rule=rule)


def first_rule(address: Address) -> Rule | None:
    """The first rule that ``address`` falls under; None for a public address."""
    return next((rule for rule in RULES if rule.matches(address)), None)


def numeric_address(host: str) -> list[Address] | None:
    """``host`` as an address when it is one, read as the C resolver reads it; None for a name.

    ``inet_aton`` is the C library's own: it takes the decimal, octal, hex and
    short forms (``2130706433``, ``0177.0.0.1``, ``0x7f000001``, ``127.1``) that
    ``getaddrinfo`` would dial, which ``ipaddress`` rightly rejects.
    """
    # A zone (fe80::1%eth0) picks an interface, not an address: the address is what is judged.
    literal = host.strip("[]").split("%")[0]
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    try:
        return [ipaddress.IPv4Address(socket.inet_aton(literal))]
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None


def carried_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 one stands for: mapped, compatible, NAT64, 6to4, Teredo."""
    if address.version == 4:
        return []
    assert isinstance(address, ipaddress.IPv6Address)
    carried = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
    if only_carries_ipv4(address) and address.ipv4_mapped is None:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [v4 for v4 in carried if v4 is not None]


def only_carries_ipv4(address: Address) -> bool:
    """Whether dialling ``address`` is dialling the IPv4 address in its low 32 bits, and nothing else:
    mapped, compatible (but ``::`` and ``::1``, which are themselves) and NAT64 addresses."""
    if address.version == 4:
        return False
    assert isinstance(address, ipaddress.IPv6Address)
    return address.ipv4_mapped is not None or (
        any(address in prefix for prefix in IPV4_CARRIERS) and int(address) > 1)
