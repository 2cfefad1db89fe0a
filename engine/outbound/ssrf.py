"""The SSRF guard: outbound HTTP goes only to public addresses, or to allowlisted networks.

Used when a subscription is saved (`check_url`) and on every request the deliveries worker
and the HTTP runner make. Three layers, because each closes a hole the others leave:

* `check_url` parses the URL the way aiohttp will (yarl), normalises legacy numeric IPv4
  forms (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``), resolves names with the
  loop's getaddrinfo and refuses the URL if ANY address is forbidden.
* `resolver()` is an aiohttp resolver that re-resolves and re-checks at connect time and
  returns only checked addresses, so a name that changes its answer between the check and
  the connection (DNS rebinding) still cannot reach a forbidden address.
* `connector()` also checks the socket address right before connecting, because aiohttp
  does not call the resolver at all for IP-literal hosts (e.g. a redirect to
  ``http://169.254.169.254/``).

Redirects: either pass ``allow_redirects=False``, or use `request_with_checked_redirects`,
which follows them itself and re-checks each hop with `check_redirect`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.abc
from yarl import URL

from engine.errors import ConfigError, DestinationRefused, OutboundError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
DEFAULT_MAX_REDIRECTS = 5
# What a cross-origin redirect hop keeps of the caller's headers: none that can carry a
# credential (custom headers such as X-Api-Key, Cookie and Authorization are all dropped).
SAFE_REDIRECT_HEADERS = frozenset({"user-agent", "accept", "accept-language", "content-type"})

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 8215's local-use NAT64 prefix: its embedded address is not at a fixed place for
# every prefix length, so the whole prefix is refused.
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
# Cloud instance metadata and platform endpoints. Refused even inside an allowlisted
# network (allowing 100.64.0.0/10 for a VPN must not open Alibaba's metadata): only an
# allowlist entry naming the address alone (/32 or /128) lets one through. Most are also
# link-local, unique-local or CGNAT addresses; 192.0.0.192 and 168.63.129.16 are not.
_METADATA: dict[IPAddress, str] = {
    ipaddress.ip_address(address): service
    for address, service in (
        ("169.254.169.254", "instance metadata of AWS, Azure, GCP, Oracle, OpenStack..."),
        ("fd00:ec2::254", "AWS instance metadata over IPv6"),
        ("169.254.170.2", "AWS ECS task metadata and credentials"),
        ("169.254.170.23", "AWS EKS Pod Identity credentials"),
        ("fd00:ec2::23", "AWS EKS Pod Identity credentials over IPv6"),
        ("169.254.169.123", "AWS time sync"),
        ("fd00:ec2::123", "AWS time sync over IPv6"),
        ("169.254.169.253", "AWS DNS resolver"),
        ("fd00:ec2::253", "AWS DNS resolver over IPv6"),
        ("fd20:ce::254", "GCP instance metadata over IPv6"),
        ("168.63.129.16", "Azure platform endpoint (WireServer, DNS)"),
        ("100.100.100.200", "Alibaba Cloud instance metadata"),
        ("192.0.0.192", "Oracle Cloud instance metadata"),
        ("169.254.0.23", "Tencent Cloud instance metadata"),
    )
}
# Names of metadata services, refused without asking DNS (they resolve only inside a
# cloud, where they name the addresses above).
_METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.azure.com",
    }
)
_NUMERIC_LABEL = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")


class HostNotResolved(OutboundError):
    """Raised when a destination's host name does not resolve (possibly a transient DNS error)."""


@dataclass(frozen=True)
class Destination:
    # The URL to request: numeric IPv4 forms are rewritten to dotted quads.
    url: str
    host: str
    port: int
    # Every address the host resolved to; all of them passed the check.
    addresses: tuple[str, ...]


# --- pure checks -------------------------------------------------------------


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read `host` as inet_aton would (1-4 parts, decimal/0octal/0xhex); None if it is a name.

    A host whose last label is a number but which is no valid address (``1.2.3.4.5``,
    ``08.1``) is refused rather than treated as a name: resolvers disagree about those.
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]  # a trailing dot is allowed on an address as on a name
    if not labels or not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    values: list[int] = []
    for label in labels:
        value = _parse_ipv4_part(label)
        if value is None:
            raise DestinationRefused(f"host {host!r} looks like an IPv4 address but is not one")
        values.append(value)
    if len(values) > 4 or any(value > 255 for value in values[:-1]):
        raise DestinationRefused(f"host {host!r} looks like an IPv4 address but is not one")
    # The last part fills all the remaining bytes: 127.1 is 127.0.0.1, 2130706433 is too.
    last_limit = 256 ** (5 - len(values))
    if values[-1] >= last_limit:
        raise DestinationRefused(f"host {host!r} looks like an IPv4 address but is not one")
    number = values[-1]
    for position, value in enumerate(values[:-1]):
        number += value << (8 * (3 - position))
    return ipaddress.IPv4Address(number)


def _parse_ipv4_part(label: str) -> int | None:
    try:
        if label[:2] in ("0x", "0X"):
            return int(label[2:] or "0", 16)
        if len(label) > 1 and label.startswith("0"):
            return int(label, 8)
        return int(label, 10)
    except ValueError:
        return None


def unmap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 one (::ffff:a.b.c.d), else `address`."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def metadata_service(address: IPAddress) -> str | None:
    """The cloud metadata service `address` reaches (directly, or through an IPv6 form
    embedding its IPv4 address), else None."""
    service = _METADATA.get(address)
    if service is None and isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or _embedded_ipv4(address)
        service = _METADATA.get(inner) if inner is not None else None
    return service


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` must not be contacted, or None when it is a public address."""
    service = metadata_service(address)
    if service is not None:
        return f"cloud metadata address ({service})"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = forbidden_reason(address.ipv4_mapped)
            return inner and f"IPv4-mapped IPv6 address of a {inner}"
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            if inner:
                return f"IPv6 address embedding {embedded}, a {inner}"
        if address in _NAT64_LOCAL:
            return "local-use NAT64 address (64:ff9b:1::/48), which may reach any IPv4 address"
        if address in _UNIQUE_LOCAL:
            return "unique-local IPv6 address (fc00::/7)"
        if address.is_site_local:
            return "site-local IPv6 address (fec0::/10)"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address (where cloud metadata services live)"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT address (100.64.0.0/10)"
    if address.is_multicast:
        return "multicast address"
    if address.is_private:
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if not address.is_global:
        return "address that is not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # 6to4 (2002::/16) and well-known NAT64 (64:ff9b::/96) reach the IPv4 address they embed.
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:
        # IPv4-compatible (::a.b.c.d, deprecated): stacks that still route it reach a.b.c.d.
        return ipaddress.IPv4Address(int(address))
    return None


def parse_allowlist(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(
                f"outbound.allow_private: {cidr!r} is not a CIDR network (e.g. 127.0.0.1/32)"
            ) from None
    return tuple(networks)


def _literal_address(host: str) -> IPAddress | None:
    """The address a host names literally (IPv6 zone ids dropped), or None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return parse_legacy_ipv4(host)


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


# --- the guard ---------------------------------------------------------------


class DestinationGuard:
    """Decides whether outbound HTTP may go to a URL, and keeps connections to checked addresses."""

    def __init__(self, allow_private: Sequence[str] = ()) -> None:
        self._allowed = parse_allowlist(allow_private)

    def check_address(self, host: str, address: str | IPAddress) -> str:
        """Return the (unmapped) address as text if it may be contacted; raise otherwise."""
        parsed = unmap(ipaddress.ip_address(address) if isinstance(address, str) else address)
        if metadata_service(parsed) is None:
            allowed = any(parsed in network for network in self._allowed)
        else:  # only an entry for the address alone
            allowed = any(parsed in net and net.num_addresses == 1 for net in self._allowed)
        if allowed:
            return str(parsed)
        reason = forbidden_reason(parsed)
        if reason is None:
            return str(parsed)
        shown = host if host == str(parsed) else f"{host} ({parsed})"
        entry = (
            "it"
            if metadata_service(parsed) is None
            else f"{parsed} alone (/{parsed.max_prefixlen})"
        )
        raise DestinationRefused(
            f"refusing to connect to {shown}: {reason}; allow {entry} explicitly with "
            f"outbound.allow_private if this is intended"
        )

    def check_addresses(self, host: str, addresses: Sequence[str | IPAddress]) -> tuple[str, ...]:
        """Check every address a host resolved to: one forbidden address refuses them all."""
        if not addresses:
            raise HostNotResolved(f"host {host!r} resolved to no address")
        checked = tuple(dict.fromkeys(self.check_address(host, a) for a in addresses))
        return checked

    async def resolve_checked(self, host: str, port: int, family: int = 0) -> tuple[str, ...]:
        """Resolve `host` (a name or any literal form) and return its checked addresses."""
        literal = _literal_address(host)
        if literal is not None:
            return self.check_addresses(host, [literal])
        if host.rstrip(".").lower() in _METADATA_NAMES:
            raise DestinationRefused(
                f"refusing to connect to {host}: the name of a cloud metadata service"
            )
        if _is_localhost_name(host):
            # RFC 6761: localhost names are loopback, whatever DNS or search domains say.
            return self.check_addresses(host, ["127.0.0.1"])
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise HostNotResolved(f"cannot resolve host {host!r}: {exc}") from None
        return self.check_addresses(host, [info[4][0].split("%", 1)[0] for info in infos])

    async def check_url(self, url: str) -> Destination:
        """Check scheme, host and every resolved address of `url`; raise DestinationRefused."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as exc:
            raise DestinationRefused(f"invalid URL {url!r}: {exc}") from None
        scheme = (parsed.scheme or "").lower()
        if scheme not in ALLOWED_SCHEMES:
            raise DestinationRefused(
                f"refusing URL {url!r}: only http and https are allowed, not {scheme or 'none'!r}"
            )
        host = parsed.raw_host  # IDNA-encoded, lowercase, without brackets or userinfo
        if not host:
            raise DestinationRefused(f"refusing URL {url!r}: it has no host")
        port = parsed.port
        assert port is not None  # yarl supplies 80/443 for http/https
        addresses = await self.resolve_checked(host, port)
        literal = _literal_address(host)
        canonical = unmap(literal) if literal is not None else None
        if isinstance(canonical, ipaddress.IPv4Address) and str(canonical) != host:
            # aiohttp refuses legacy forms and IPv4-mapped IPv6 may need an IPv6 stack:
            # hand it the dotted quad that was checked.
            parsed = parsed.with_host(str(canonical))
            host = str(canonical)
        return Destination(url=str(parsed), host=host, port=port, addresses=addresses)

    async def check_redirect(self, location: str, base_url: str) -> Destination:
        """Check a redirect target, resolved against the URL that answered with it."""
        try:
            target = URL(base_url).join(URL(location))
        except (ValueError, TypeError) as exc:
            raise DestinationRefused(f"invalid redirect location {location!r}: {exc}") from None
        return await self.check_url(str(target))

    def resolver(self) -> aiohttp.abc.AbstractResolver:
        return GuardedResolver(self)

    def connector(self, **connector_options: Any) -> aiohttp.TCPConnector:
        """A TCPConnector that only connects to checked addresses, IP-literal hosts included."""
        return aiohttp.TCPConnector(
            resolver=self.resolver(), socket_factory=self._checked_socket, **connector_options
        )

    def _checked_socket(self, addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        try:
            self.check_address(str(sockaddr[0]), str(sockaddr[0]).split("%", 1)[0])
        except DestinationRefused as exc:
            # aiohttp only reports OSErrors from here (as ClientConnectorError); anything
            # else would be swallowed by its happy-eyeballs race.
            raise PermissionError(errno.EACCES, str(exc)) from None
        return socket.socket(family=family, type=type_, proto=proto)


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """An aiohttp resolver returning only addresses the guard checked, at connect time."""

    def __init__(self, guard: DestinationGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        addresses = await self._guard.resolve_checked(host, port, family)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        return None


# --- redirects ---------------------------------------------------------------


async def request_with_checked_redirects(
    guard: DestinationGuard,
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    **request_options: Any,
) -> aiohttp.ClientResponse:
    """Make a request, following redirects only to destinations the guard allows.

    The caller owns the returned response (``async with`` it or release it). Follows
    browser rules: 303, and 301/302 after a POST, become a GET without a body; 307/308 keep
    method and body. When a redirect leaves the original origin, every header but
    SAFE_REDIRECT_HEADERS is dropped, and so are the `auth` and `cookies` options.
    """
    request_options.pop("allow_redirects", None)
    method = method.upper()
    destination = await guard.check_url(url)
    current_url = destination.url
    headers = dict(request_options.pop("headers", None) or {})
    origin = URL(current_url).origin()
    for _ in range(max_redirects + 1):
        response = await session.request(
            method, current_url, headers=headers, allow_redirects=False, **request_options
        )
        location = response.headers.get("Location")
        if response.status not in REDIRECT_STATUSES or location is None:
            return response
        response.release()
        next_destination = await guard.check_redirect(location, current_url)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else method
            for body_option in ("data", "json"):
                request_options.pop(body_option, None)
            headers = {
                name: value
                for name, value in headers.items()
                if name.lower() not in ("content-type", "content-length")
            }
        current_url = next_destination.url
        if URL(current_url).origin() != origin:
            headers = {
                name: value
                for name, value in headers.items()
                if name.lower() in SAFE_REDIRECT_HEADERS
            }
            request_options.pop("auth", None)
            request_options.pop("cookies", None)
    raise OutboundError(f"too many redirects (more than {max_redirects}) starting at {url}")
