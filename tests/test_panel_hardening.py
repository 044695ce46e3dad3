"""The admin listener as an attacker sees it: what its answers give away, its cookies
behind TLS, its login throttle. Real relay on port 0, real aiohttp clients."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from admin.sessions import forwarded_https
from panel_helpers import client, cookie_attrs, get, login, start_panel, url
from relay.netaddr import parse_networks


async def raw_answer(port: int, request: bytes) -> bytes:
    """Send bytes as they are (a malformed request, say) and read the answer's header block."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def browser(app, source: str = "127.0.0.1", *, https: bool = False, **kwargs) -> aiohttp.ClientSession:
    """A browser-like client connecting from `source` (any 127/8 address is this host);
    https: its cookie jar treats the panel as a secure origin (it sits behind TLS)."""
    secure_origin = url(app, "/") if https else None
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=secure_origin)
    return aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(local_addr=(source, 0)), **kwargs)


def header_names(block: bytes) -> set[str]:
    lines = block.decode("latin-1").split("\r\n")[1:]
    return {line.split(":", 1)[0].strip().lower() for line in lines if ":" in line}


# no Server header

async def test_no_answer_of_the_admin_or_hits_listener_names_its_software(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path)
    async with client() as s:
        for path in ("/healthz", "/metrics", "/login", "/", "/no/such/page", "/static/panel.css",
                     "/api/v1/messages", "/api/v1/no/such"):
            async with s.get(url(app, path), allow_redirects=False) as resp:
                assert "Server" not in resp.headers, (path, resp.status, resp.headers["Server"])
        async with s.post(url(app, "/login"), data={}, allow_redirects=False) as resp:  # 403, no token
            assert resp.status == 403 and "Server" not in resp.headers
        hits = f"http://127.0.0.1:{app.port('hits')}"
        for path in ("/healthz", "/o/" + "A" * 24 + ".gif", "/c/nothing/1", "/nowhere"):
            async with s.get(hits + path, allow_redirects=False) as resp:
                assert "Server" not in resp.headers, (path, resp.status)
    # a request aiohttp's parser refuses is answered before any route or middleware
    block = await raw_answer(app.port("admin"), b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n")
    assert block.split(b" ")[1] == b"400" and "server" not in header_names(block), block


# Secure cookies behind TLS

def test_only_a_trusted_proxy_says_https():
    proxies = parse_networks(["10.0.0.0/8"])
    assert forwarded_https("10.1.2.3", "https", proxies) and forwarded_https("10.1.2.3", "HTTPS, http", proxies)
    assert not forwarded_https("10.1.2.3", "http", proxies) and not forwarded_https("10.1.2.3", None, proxies)
    assert not forwarded_https("192.0.2.1", "https", proxies) and not forwarded_https("", "https", proxies)
    assert not forwarded_https("10.1.2.3", "https", ())

async def test_cookies_are_secure_when_the_panel_is_public_over_https(start_app, tmp_path):
    app = await start_panel(start_app, tmp_path, admin_public_url="https://panel.example.com")
    async with browser(app, https=True) as s:
        resp, _ = await get(s, app, "/login")
        assert "secure" in cookie_attrs(resp, "trackrelay_login")
        resp = await login(s, app)
        assert resp.status == 303 and "secure" in cookie_attrs(resp, "trackrelay_session")
        assert (await get(s, app, "/"))[0].status == 200


@pytest.mark.parametrize("source, secure", [("127.0.0.1", True), ("127.0.0.2", False)])
async def test_x_forwarded_proto_is_believed_from_trusted_proxies_only(start_app, tmp_path, source, secure):
    app = await start_panel(start_app, tmp_path, http_trusted_proxies="127.0.0.1/32")
    async with browser(app, source, https=secure, headers={"X-Forwarded-Proto": "https"}) as s:
        resp, _ = await get(s, app, "/login")
        assert ("secure" in cookie_attrs(resp, "trackrelay_login")) is secure
        resp = await login(s, app)
        assert resp.status == 303 and ("secure" in cookie_attrs(resp, "trackrelay_session")) is secure
        assert (await get(s, app, "/"))[0].status == 200
