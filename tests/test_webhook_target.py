"""The SSRF guard: which URLs and addresses a webhook may reach. Checks only: no traffic leaves."""
from __future__ import annotations

import ipaddress

import pytest

from relay.webhook_target import Refused, Target, address_refusal, check_url, resolve_and_check

REFUSED = [
    "127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1",          # loopback, also IPv4-mapped
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.1.1", "::ffff:10.1.2.3",
    "169.254.0.1", "fe80::1", "febf::1",                             # link-local
    "fc00::1", "fd12:3456::1",                                       # unique-local
    "100.64.0.1", "100.127.255.254",                                 # CGNAT
    "224.0.0.1", "239.1.2.3", "ff02::1", "ff0e::1",                  # multicast
    "0.0.0.0", "::",                                                 # unspecified
    "240.0.0.1", "255.255.255.255", "198.18.0.1", "192.0.2.1", "2001:db8::1",  # reserved, benchmark, docs
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",      # cloud metadata
    "2002:7f00:1::1", "2002:a00:1::1",                                # 6to4 wrapping 127.0.0.1 / 10.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",                          # NAT64 of loopback / metadata
    "2001:0:4136:e378:8000:63bf:80ff:fffe",                           # Teredo of 127.0.0.1
]
PUBLIC = ["1.1.1.1", "8.8.8.8", "93.184.215.14", "172.15.255.255", "172.32.0.1", "100.63.255.255",
          "100.128.0.1", "2606:4700:4700::1111", "2a00:1450:4001:800::200e", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", REFUSED)
def test_non_public_addresses_are_refused(text: str) -> None:
    assert address_refusal(ipaddress.ip_address(text)) is not None


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    assert address_refusal(ipaddress.ip_address(text)) is None


@pytest.mark.parametrize("text", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd12::1", "100.64.0.1"])
def test_allow_private_allows_private_addresses(text: str) -> None:
    assert address_refusal(ipaddress.ip_address(text), allow_private=True) is None


@pytest.mark.parametrize("text", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254",
                                  "64:ff9b::a9fe:a9fe"])
def test_metadata_addresses_are_refused_even_with_allow_private(text: str) -> None:
    reason = address_refusal(ipaddress.ip_address(text), allow_private=True)
    assert reason is not None and "metadata" in reason


def test_a_refusal_says_why_and_names_the_key_that_allows_it() -> None:
    reason = address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert reason is not None and "loopback" in reason and "notify.allow_private_targets" in reason


@pytest.mark.parametrize("url, expected", [
    ("https://hooks.slack.com/services/T/B/x", Target("https://hooks.slack.com/services/T/B/x", "https",
                                                     "hooks.slack.com", 443)),
    ("http://example.com:8080/h", Target("http://example.com:8080/h", "http", "example.com", 8080)),
    ("https://[2606:4700::1]/h", Target("https://[2606:4700::1]/h", "https", "2606:4700::1", 443)),
])
def test_http_and_https_urls_are_accepted(url: str, expected: Target) -> None:
    assert check_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/",
                                 "javascript:alert(1)", "example.com/hook", "https:///nohost",
                                 "https://user:pw@example.com/", "https://user@example.com/",
                                 "https://example.com:99999/", "https://example.com:0/", "http://[::1/"])
def test_other_urls_are_refused(url: str) -> None:
    assert isinstance(check_url(url), Refused)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "::1", "localhost", "169.254.169.254"])
async def test_resolve_and_check_refuses_loopback_names_and_literals(host: str) -> None:
    assert isinstance(await resolve_and_check(host, 80, allow_private=False), Refused)


async def test_resolve_and_check_returns_the_checked_addresses() -> None:
    assert await resolve_and_check("localhost", 80, allow_private=True) != []
    addresses = await resolve_and_check("127.0.0.1", 80, allow_private=True)
    assert addresses == [ipaddress.ip_address("127.0.0.1")]


async def test_an_unresolvable_host_is_refused_with_its_name() -> None:
    result = await resolve_and_check("no-such-host.invalid", 80, allow_private=False)
    assert isinstance(result, Refused) and "no-such-host.invalid" in result.reason
