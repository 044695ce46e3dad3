"""The hits server for real: tracked mail sent through the relay, then pixel and click
requests over HTTP, and what the store ends up holding."""
from __future__ import annotations

import asyncio
import ipaddress
import secrets
import sqlite3
from contextlib import closing

import aiohttp
import pytest

from conftest import add_user, make_config
from corpus import CORPUS, require_corpus
from hits_helpers import (
    CHROME,
    LINKS,
    READER_IP,
    THUNDERBIRD,
    TRICKY_URL,
    FakeClock,
    db_rows,
    deliver_tracked,
    events,
    hit,
    local,
    settled,
    start_relay,
)
from relay.http_hits import GIF, safe_location
from relay.store.link_lists import to_json, url_list
from relay.store.sqlite import SqliteStore



def uas(name: str) -> list[str]:
    path = require_corpus() / "user-agents" / name
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def first_host(cidr_file: str) -> str:
    path = require_corpus() / "user-agents" / "ip-ranges" / cidr_file
    line = next(x for x in path.read_text().splitlines() if x.strip() and not x.startswith("#"))
    net = ipaddress.ip_network(line.split()[0], strict=False)
    return str(net.network_address + 1)


async def test_pixel_is_a_gif_that_never_waits_and_records_the_open(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        resp = await hit(s, app, copy.pixel, ip=READER_IP)
        async with s.get(local(app, copy.pixel), headers={"User-Agent": THUNDERBIRD}) as again:
            body = await again.read()
    assert resp.status == 200 and body == GIF and len(GIF) == 43
    assert resp.headers["Content-Type"] == "image/gif"
    assert resp.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, private"
    assert resp.headers["X-Robots-Tag"] == "noindex"
    assert "Set-Cookie" not in resp.headers and not s.cookie_jar._cookies  # type: ignore[attr-defined]
    rows = await events(app, tmp_path, 2)
    # classified on the full address, stored as its /24; the sender's own IP is "self"
    assert rows[0] == ("open", "human", "203.0.113.0", THUNDERBIRD, None, 0)
    assert rows[1][:3] == ("open", "self", "127.0.0.0")


async def test_head_requests_are_events_of_class_scanner(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        pixel = await hit(s, app, copy.pixel, ip=READER_IP, method="HEAD")
        click = await hit(s, app, copy.clicks[1], ip=READER_IP, method="HEAD")
    assert pixel.status == 200 and pixel.headers["Content-Length"] == "43"
    assert click.status == 302 and click.headers["Location"] == LINKS[1]
    rows = await events(app, tmp_path, 2)
    # the HEAD open came first, so the click implies no second open
    assert [(r[0], r[1], r[5]) for r in rows] == [("open", "scanner", 0), ("click", "scanner", 0)]


async def test_unknown_and_malformed_tokens_get_the_same_image_and_record_nothing(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    await deliver_tracked(app, sink)
    base = f"http://127.0.0.1:{app.port('hits')}"
    paths = [f"/o/{secrets.token_urlsafe(18)}.gif", "/o/short.gif", "/o/" + "A" * 300 + ".gif",
             "/o/%27%22%3Cscript%3E.gif", "/o/..%2F..%2Fetc.gif"]
    async with aiohttp.ClientSession() as s:
        for path in paths:
            async with s.get(base + path) as resp:
                assert resp.status == 200 and await resp.read() == GIF, path
                assert resp.headers["Cache-Control"].startswith("no-store")
    await settled(app)  # the well-shaped token was looked up, and found unknown
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(0,)]
    assert app.hits.unknown.get("open") == len(paths)


async def test_click_redirects_to_the_stored_url_byte_for_byte(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        for position, url in enumerate(LINKS):
            resp = await hit(s, app, copy.clicks[position], ip=READER_IP)
            assert resp.status == 302
            [location] = [v for k, v in resp.raw_headers if k.lower() == b"location"]
            assert location == url.encode("ascii"), (location, url)
            clock.advance(30)  # slower than a burst
        # parameters in the request never choose the target
        resp = await hit(s, app, copy.clicks[0] + "?url=https://evil.example/&to=https://evil.example/",
                         ip=READER_IP)
        assert resp.headers["Location"] == TRICKY_URL
    rows = await events(app, tmp_path, 5)
    assert [(r[0], r[1], r[4], r[5]) for r in rows] == [
        ("open", "human", None, 1), ("click", "human", 0, 0), ("click", "human", 1, 0),
        ("click", "human", 2, 0), ("click", "human", 0, 0)]


async def test_unknown_or_tampered_clicks_are_404_and_malformed_ones_never_reach_the_store(
        sink, start_app, tmp_path):
    lookups: list[str] = []

    class CountingStore(SqliteStore):
        async def copy_target(self, token: str):
            lookups.append(token)
            return await super().copy_target(token)

    cfg = make_config(tmp_path, f"smtp://127.0.0.1:{sink.port}", http_trusted_proxies="127.0.0.1/32")
    app = await start_app(cfg, store=CountingStore(f"{tmp_path}/relay.db"))
    await add_user(app)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    token = copy.token
    tampered = ("A" if token[0] != "A" else "B") + token[1:]
    base = f"http://127.0.0.1:{app.port('hits')}"
    malformed = [f"/c/{token}", f"/c/{token}/", f"/c/{token}/x", f"/c/{token}/-1", f"/c/{token}/0/extra",
                 "/c/https://evil.example/", "/c/%2F%2Fevil.example/0", "/c/short/0", "/c/" + "a" * 100 + "/0",
                 f"/c/{token}/1234567"]
    async with aiohttp.ClientSession() as s:
        for path in malformed:
            async with s.get(base + path, allow_redirects=False) as resp:
                assert resp.status == 404 and "Location" not in resp.headers, path
                assert "text/html" in resp.headers["Content-Type"]
        assert lookups == []
        for path in (f"/c/{tampered}/0", f"/c/{token}/99"):
            async with s.get(base + path, allow_redirects=False) as resp:
                assert resp.status == 404 and "Location" not in resp.headers, path
    assert lookups[0] == tampered
    await settled(app)
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(0,)]


async def test_a_stored_url_cannot_inject_headers(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    evil = "https://example.com/a\r\nSet-Cookie: pwned=1\r\n\r\n<script>x</script>?q=caf\u00e9 \u2028"
    # saved links never change, so the URL goes straight into the store (no rewrite would save it)
    with closing(sqlite3.connect(f"{tmp_path}/relay.db")) as conn, conn:
        conn.execute("UPDATE links SET urls = ? WHERE message_id = 1", (to_json(url_list([(40, evil)])),))
    async with aiohttp.ClientSession() as s:
        resp = await hit(s, app, copy.clicks[0].rsplit("/", 1)[0] + "/40", ip=READER_IP)
    assert resp.status == 302 and "Set-Cookie" not in resp.headers
    assert resp.headers["Location"] == (
        "https://example.com/a%0D%0ASet-Cookie:%20pwned=1%0D%0A%0D%0A<script>x</script>?q=caf%C3%A9%20%E2%80%A8")
    assert safe_location(TRICKY_URL) is TRICKY_URL


async def test_forwarded_for_is_believed_only_from_trusted_proxies(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock, http_trusted_proxies="",
                            privacy_anonymize_ip="false")
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        await hit(s, app, copy.pixel, ip=READER_IP)
    [row] = await events(app, tmp_path, 1)
    assert row[2] == "127.0.0.1" and row[1] == "self"  # the forged header was ignored


async def test_forwarded_chain_and_ipv6_anonymisation(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock, http_trusted_proxies="127.0.0.1/32,10.0.0.0/8")
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(120)
    async with aiohttp.ClientSession() as s:
        # the left entry is the client's own claim; the first untrusted hop from the right counts
        await hit(s, app, copy.pixel, ip="198.51.100.9, 2001:db8:1234:5678::1, 10.1.2.3")
    [row] = await events(app, tmp_path, 1)
    assert row[2] == "2001:db8:1234::"


async def test_healthz_other_paths_and_methods(sink, start_app, tmp_path):
    app = await start_relay(start_app, tmp_path, sink)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    base = f"http://127.0.0.1:{app.port('hits')}"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/healthz") as resp:
            assert resp.status == 200 and await resp.text() == "ok\n"
        for path in ("/", "/o/", "/o/x.png", "/favicon.ico", "/healthz/x"):
            async with s.get(base + path, allow_redirects=False) as resp:
                assert resp.status == 404, path
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            for path in (local(app, copy.pixel), local(app, copy.clicks[0])):
                async with s.request(method, path, data=b"x", allow_redirects=False) as resp:
                    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD", (method, path)
    await settled(app)
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(0,)]


def _corpus_cases() -> list:
    """(file, user agent -> expected class) for pixel opens a while after delivery."""
    if not CORPUS.is_dir():
        return [pytest.param(None, None, id="missing-corpus")]
    cases = [("mail-image-proxies.txt", "proxy"), ("mail-clients.txt", "human"),
             ("browsers-desktop.txt", "human"), ("browsers-mobile.txt", "human"),
             ("link-preview-and-scanner-bots.txt", "scanner"), ("apple-mail-and-mpp.txt", "human")]
    return [pytest.param(name, cls, id=name) for name, cls in cases]


@pytest.mark.parametrize("name, default_class", _corpus_cases())
async def test_every_corpus_user_agent_gets_its_class_over_http(sink, start_app, tmp_path, name, default_class):
    if name is None:
        require_corpus()
    lines = uas(name)
    exceptions = {"Mozilla/5.0": "prefetch", "Chrome Privacy Preserving Prefetch Proxy": "prefetch"}
    expected = {ua: exceptions.get(ua, default_class) for ua in lines}
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(600)
    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(hit(s, app, copy.pixel, ua=ua, ip=READER_IP) for ua in expected))
    rows = await events(app, tmp_path, len(expected))
    got = {r[3]: r[1] for r in rows}
    wrong = {ua: (got.get(ua), cls) for ua, cls in expected.items() if got.get(ua) != cls}
    assert not wrong


def _network_cases() -> list:
    if not CORPUS.is_dir():
        return [pytest.param(None, None, None, None, None, id="missing-corpus")]
    tsv = CORPUS / "user-agents" / "security-scanners-observed.tsv"
    observed = []
    for line in tsv.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if line.startswith(("#", "expected_class")) or len(cols) < 3 or not cols[1]:
            continue
        ip = cols[1].split("/")[0]
        ip = ip[:-1] + "7" if cols[1].endswith("/24") else ip
        # as reported: a few seconds after delivery, with an ordinary browser UA (or none)
        observed.append(pytest.param("click", ip, cols[2], cols[0], 3, id=f"observed-{cols[1]}"))
    late = [
        pytest.param("open", "apple-private-relay-egress-ipv4-merged.txt", "Mozilla/5.0", "prefetch", id="mpp-v4"),
        pytest.param("open", "apple-private-relay-egress-ipv6-merged.txt", "Mozilla/5.0", "prefetch", id="mpp-v6"),
        pytest.param("open", "17.58.1.1", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                     "(KHTML, like Gecko)", "prefetch", id="apple-mail-ua-from-17/8"),
        pytest.param("open", "googlebot-ipv4.txt", CHROME, "scanner", id="googlebot-v4"),
        pytest.param("open", "googlebot-ipv6.txt", CHROME, "scanner", id="googlebot-v6"),
        pytest.param("click", "bingbot-ipv4.txt", CHROME, "scanner", id="bingbot"),
        pytest.param("open", "40.92.0.7", CHROME, "scanner", id="exchange-online-protection"),
        pytest.param("open", "66.249.84.10", "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
                     "(via ggpht.com GoogleImageProxy)", "proxy", id="gmail-proxy"),
        pytest.param("open", READER_IP, CHROME, "human", id="reader"),
        pytest.param("click", READER_IP, CHROME, "human", id="reader-click"),
        pytest.param("click", "104.47.1.254", "", "scanner", id="safe-links-no-ua"),
        pytest.param("click", "40.107.218.12", CHROME, "scanner", id="safe-links-late"),
    ]
    # long after delivery: only the network (or the UA) can give a machine away
    return observed + [pytest.param(*p.values, 600, id=p.id) for p in late]


@pytest.mark.parametrize("kind, source, ua, expected, delay", _network_cases())
async def test_networks_from_the_corpus_get_their_class_over_http(sink, start_app, tmp_path, kind, source, ua,
                                                                  expected, delay):
    if kind is None:
        require_corpus()
    ip = first_host(source) if source.endswith(".txt") else source
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    clock.advance(delay)
    async with aiohttp.ClientSession() as s:
        await hit(s, app, copy.pixel if kind == "open" else copy.clicks[0], ua=ua, ip=ip)
    rows = await events(app, tmp_path, 1)
    assert rows[-1][:2] == (kind, expected)


async def test_timing_rules_with_an_injected_clock(sink, start_app, tmp_path):
    clock = FakeClock()
    app = await start_relay(start_app, tmp_path, sink, clock=clock)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    apple_mail = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    async with aiohttp.ClientSession() as s:
        clock.advance(3)  # inside tracking.machine_window (10s) of delivery
        await hit(s, app, copy.clicks[0], ua=CHROME, ip=READER_IP)
        clock.advance(1)
        await hit(s, app, copy.pixel, ua=apple_mail, ip=READER_IP)
        clock.advance(60)
        await hit(s, app, copy.pixel, ua=apple_mail, ip=READER_IP)
        clock.advance(5)
        await hit(s, app, copy.clicks[1], ua=CHROME, ip=READER_IP)
        clock.advance(1)  # another link of the same copy within a second: a burst
        await hit(s, app, copy.clicks[2], ua=CHROME, ip=READER_IP)
        clock.advance(30)
        await hit(s, app, copy.clicks[2], ua=CHROME, ip=READER_IP)
    rows = await events(app, tmp_path, 7)
    assert [(r[0], r[1], r[5]) for r in rows] == [
        ("open", "scanner", 1), ("click", "scanner", 0),  # the scanner's click implies its open
        ("open", "prefetch", 0),
        ("open", "human", 0), ("click", "human", 0),
        ("click", "scanner", 0),
        ("click", "human", 0)]
