"""Where a webhook may go: http(s) URLs whose host resolves to public addresses only (SSRF guard).

The checks are pure functions on a URL and on an `ipaddress` address; `resolve_and_check` is the one
DNS lookup, and its checked addresses are the ones the client connects to (no second lookup for a
rebinding DNS server to answer differently).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: never a webhook target, not even with allow_private (a private chat
# server is a real need; a webhook that reads instance credentials never is).
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",    # AWS ECS task metadata
    "169.254.169.123",  # AWS time sync
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud
    "fd00:ec2::254",    # AWS over IPv6
    "fd00:ec2::23",     # AWS DNS over IPv6
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class Refused:
    reason: str


def check_url(url: str) -> Target | Refused:
    """http(s), a host, a valid port, no user:password@ (it would be sent to whoever answers)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return Refused(f"not a valid URL: {exc}")
    if parts.scheme not in ("http", "https"):
        return Refused("only http and https webhooks are allowed")
    if not parts.hostname:
        return Refused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        return Refused("the URL must not carry a user or password")
    if port == 0:
        return Refused("port 0 is not a valid port")
    default = 443 if parts.scheme == "https" else 80
    return Target(url=url, scheme=parts.scheme, host=parts.hostname, port=port or default)


def embedded_ipv4(addr: Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and may be routed to: 6to4, Teredo, NAT64."""
    if isinstance(addr, ipaddress.IPv4Address):
        return []
    found = [addr.sixtofour] if addr.sixtofour is not None else []
    if addr.teredo is not None:
        found.append(addr.teredo[1])
    if addr in NAT64:
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def address_refusal(addr: Address, allow_private: bool = False) -> str | None:
    """Why a webhook must not connect to `addr`, or None if it may."""
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:a.b.c.d is a.b.c.d on the wire
    for candidate in [mapped] if mapped else [addr, *embedded_ipv4(addr)]:
        if candidate in METADATA:
            return f"{addr} is a cloud metadata address"
        if allow_private:
            continue
        reason = _non_public(candidate)
        if reason:
            return f"{addr} is {reason} (notify.allow_private_targets allows it)"
    return None


def _non_public(addr: Address) -> str | None:
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if isinstance(addr, ipaddress.IPv4Address) and addr in CGNAT:
        return "a shared (CGNAT) address"
    if addr.is_private:  # 10/8, 172.16/12, 192.168/16, fc00::/7 and the IANA special ranges
        return "a private address"
    if addr.is_reserved or not addr.is_global:
        return "a reserved address"
    return None


async def resolve_and_check(host: str, port: int, allow_private: bool) -> list[Address] | Refused:
    """The host's addresses, all of them allowed; one refused address refuses the host (a name that
    resolves to both a public and a private address is how rebinding attacks start)."""
    try:
        literal: Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return Refused(f"cannot resolve {host}: {exc}")
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not addresses:
        return Refused(f"{host} has no address")
    for addr in addresses:
        reason = address_refusal(addr, allow_private)
        if reason:
            return Refused(f"{host}: {reason}")
    return addresses
