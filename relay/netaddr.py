"""Client addresses of HTTP hits: who really asked, and what of it may be stored. No I/O."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@lru_cache(maxsize=65536)  # the same few addresses come back again and again; parsing is the cost
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # an IPv4 client seen through a dual-stack socket reads ::ffff:a.b.c.d; classify it as IPv4
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_ip(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    X-Forwarded-For entry that is not itself a trusted proxy.

    Walking from the right matters: the left entries come from the client and can be forged.
    """
    peer_addr = parse_ip(peer)
    if peer_addr is None:
        return peer
    if not trusted or not any(peer_addr in net for net in trusted):
        return _text(peer_addr)
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    current = peer_addr
    for hop in reversed(hops):
        addr = parse_ip(hop)
        if addr is None:  # garbage in the chain: trust nothing left of it
            return _text(current)
        current = addr
        if not any(addr in net for net in trusted):
            return _text(addr)
    return _text(current)


@lru_cache(maxsize=65536)  # str() of an address is slow, and the same few come back
def _text(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(addr)


@lru_cache(maxsize=65536)
def anonymize_ip(ip: str) -> str:
    """IPv4 to its /24, IPv6 to its /48 (the network address); anything else unchanged."""
    addr = parse_ip(ip)
    if addr is None:
        return ip
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)
