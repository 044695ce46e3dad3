"""The hits server's HTTP layer, spoken to over raw sockets: pipelining, limits, timeouts,
malformed requests. Everything a public pixel server meets from hostile or broken clients."""
from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import aiohttp
import pytest

from hits_helpers import READER_IP, db_rows, deliver_tracked, events, start_relay, wait_until
from relay.http_hits import GIF, HitsServer, HttpLimits


async def exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or read_timeout passes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), read_timeout):
            chunks.append(chunk)
    finally:
        writer.close()
    return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    # an answer follows the previous body directly (a body ends without a line break)
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def get(path: str, *extra: str, method: str = "GET", close: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t.example", f"X-Forwarded-For: {READER_IP}", *extra]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@pytest.fixture
async def relay(sink: Any, start_app: Any, tmp_path: Any) -> tuple[Any, Any]:
    app = await start_relay(start_app, tmp_path, sink)
    copy = (await deliver_tracked(app, sink))["bob@example.org"]
    return app, copy


async def test_pipelined_requests_are_answered_in_order_and_all_recorded(relay: tuple, tmp_path: Any) -> None:
    app, copy = relay
    app.hits._targets.discard(copy.token)  # the first click must ask the store: a slow answer
    requests = [get(path_of(copy.clicks[0])), get(path_of(copy.pixel)), get("/healthz"),
                get(path_of(copy.clicks[1])), get("/nope", close=True)]
    answer = await exchange(app.port("hits"), b"".join(requests))
    assert statuses(answer) == [302, 200, 200, 302, 404]
    assert answer.index(b"Location: https://Example.COM") < answer.index(GIF) < answer.index(b"ok\n") \
        < answer.index(b"Location: https://example.org/second")
    assert answer.count(GIF) == 1 and answer.endswith(b"404: Not Found")
    rows = await events(app, tmp_path, 3)  # cold hits may be stored out of order (and imply an open)
    assert sorted(r[4] for r in rows if r[0] == "click") == [0, 1]
    assert [r[5] for r in rows if r[0] == "open"] in ([0], [1, 0], [0, 1])


async def test_head_gets_headers_only_and_http_1_0_is_closed(relay: tuple) -> None:
    app, copy = relay
    answer = await exchange(app.port("hits"), get(path_of(copy.pixel), method="HEAD") + get("/healthz", close=True))
    assert statuses(answer) == [200, 200] and GIF not in answer and b"Content-Length: 43" in answer
    answer = await exchange(app.port("hits"), f"GET {path_of(copy.pixel)} HTTP/1.0\r\n\r\n".encode())
    assert statuses(answer) == [200] and answer.endswith(GIF) and b"Connection: close" in answer


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), 400),  # a TLS hello on the plain port
    (b"GET /o/x.gif HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # a target the URL parser refuses
    (b"GET http://h:99999/o/x.gif HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /o/x.gif HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(200)) + b"\r\n", 431),
    (b"GET /o/x.gif HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000, 413),
    (b"GET /o/x.gif HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"10000\r\n" + b"x" * 65536 + b"\r\n"
     + b"10000\r\n" + b"x" * 65536 + b"\r\n0\r\n\r\n", 413),
])
async def test_malformed_and_oversized_requests_are_refused_and_closed(
        relay: tuple, tmp_path: Any, request_bytes: bytes, status: int) -> None:
    app, _ = relay
    answer = await exchange(app.port("hits"), request_bytes)
    assert statuses(answer) == [status]
    assert b"Connection: close" in answer
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM events") == [(0,)]


async def stream_until_answered(port: int, head: bytes, filler: bytes, most: int) -> tuple[int, bytes]:
    """Send head, then filler again and again (up to `most` bytes) until the server answers and
    closes: (bytes of filler sent by then, the answer, empty if all was taken without one).
    Small socket buffers keep what is in flight small, so the count is near what the server read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    answer = asyncio.ensure_future(reader.read())  # everything until the server closes
    sent = 0
    try:
        try:
            writer.write(head)
            while not answer.done() and sent < most:
                writer.write(filler)
                sent += len(filler)
                await writer.drain()
                await asyncio.sleep(0)  # let the reader see an answer that came in
        except ConnectionError:
            pass  # the server closed while we wrote: its answer is what counts
        if sent >= most and not answer.done():
            return sent, b""
        return sent, await asyncio.wait_for(answer, 5)
    finally:
        answer.cancel()
        writer.transport.abort()


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /o/x.gif HTTP/1.1\r\nHost: a\r\nX-Big: ", 431),  # one header value that never ends
    (b"GET /o/", 414),  # a request target that never ends
])
async def test_an_endless_header_or_target_is_refused_as_soon_as_it_passes_the_limit(
        relay: tuple, head: bytes, status: int) -> None:
    app, _ = relay
    listener = app.servers["hits"].sockets[0]
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # accepted sockets inherit it
    most = 4 << 20
    sent, answer = await stream_until_answered(app.port("hits"), head, b"a" * 4096, most)
    # refused at 16 KB of head: what was sent beyond that is only what the socket buffers held
    # (httptools grows a header value chunk by chunk; counted only when its line ends, it was
    # answered, with quadratic work, only after the whole value)
    assert sent < 256 * 1024, sent
    assert statuses(answer) == [status]


async def test_a_small_body_on_a_get_is_read_and_ignored(relay: tuple) -> None:
    app, copy = relay
    request = get(path_of(copy.pixel), "Content-Length: 5")[:-2] + b"\r\nhello" + get("/healthz", close=True)
    answer = await exchange(app.port("hits"), request)
    assert statuses(answer) == [200, 200]


async def test_an_upgrade_request_is_answered_and_closed(relay: tuple) -> None:
    app, copy = relay
    answer = await exchange(app.port("hits"), get(path_of(copy.pixel), "Upgrade: websocket", "Connection: upgrade")
                            + get("/healthz"))
    assert statuses(answer) == [200] and answer.endswith(GIF)


async def slow_server(app: Any, **limits: float) -> tuple[HitsServer, asyncio.AbstractServer, int]:
    server = HitsServer(app.hits, limits=HttpLimits(**limits))
    listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
    return server, listener, listener.sockets[0].getsockname()[1]


async def test_a_request_sent_too_slowly_gets_408_and_an_idle_connection_is_closed(relay: tuple) -> None:
    app, copy = relay
    server, listener, port = await slow_server(app, request_timeout=0.4, idle_timeout=0.8)
    try:
        # slowloris: the header block never ends
        answer = await exchange(port, b"GET /o/x.gif HTTP/1.1\r\nHost: a\r\n", read_timeout=5.0)
        assert statuses(answer) == [408]
        # kept alive after an answer, then silent: closed without a word
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get(path_of(copy.pixel)))
        started = asyncio.get_running_loop().time()
        first = await asyncio.wait_for(reader.readuntil(GIF), 5)
        assert statuses(first) == [200]
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert asyncio.get_running_loop().time() - started >= 0.7
        writer.close()
    finally:
        listener.close()
        await server.close()


async def test_a_connection_that_sends_nothing_is_closed_after_the_request_timeout(relay: tuple) -> None:
    app, copy = relay
    server, listener, port = await slow_server(app, request_timeout=0.3)  # idle_timeout stays 60 s
    try:
        # a connection that asked something keeps the idle timeout
        asked_reader, asked_writer = await asyncio.open_connection("127.0.0.1", port)
        asked_writer.write(get(path_of(copy.pixel)))
        assert statuses(await asyncio.wait_for(asked_reader.readuntil(GIF), 5)) == [200]
        # one that sends nothing is closed without a word
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # the check that closed it found the first one asked: still open
        assert [c for c in server.connections if not c.transport.is_closing()] != []
        assert not asked_reader.at_eof()
        asked_writer.close()
        # line breaks before a request are no request: they do not keep a connection open
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        closed = asyncio.ensure_future(reader.read())
        give_up = asyncio.get_running_loop().time() + 5
        while not closed.done() and asyncio.get_running_loop().time() < give_up:
            writer.write(b"\r\n")
            await asyncio.wait([closed], timeout=0.05)
        # closed with our line breaks unread: a reset, or an end if they had all been read
        assert closed.done() and (isinstance(closed.exception(), ConnectionResetError) or closed.result() == b"")
        writer.close()
    finally:
        listener.close()
        await server.close()


async def test_close_answers_what_was_asked_then_closes_every_connection(relay: tuple) -> None:
    app, copy = relay
    server, listener, port = await slow_server(app)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    app.hits._targets.discard(copy.token)  # an answer that has to wait for the store
    writer.write(get(path_of(copy.clicks[2])))
    await writer.drain()
    await asyncio.sleep(0)
    listener.close()
    await server.close(timeout=5)
    answer = await asyncio.wait_for(reader.read(), 5)
    assert statuses(answer) == [302] and b"Connection: close" not in answer
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    assert server.connections == set()
    writer.close()
    idle_writer.close()


async def test_a_client_that_does_not_read_stops_being_read(relay: tuple) -> None:
    app, copy = relay
    server, listener, port = await slow_server(app)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # 50 MB of requests, more than the socket buffers hold; no answer is ever read
        flood = get(path_of(copy.pixel)) * 500000
        writer.write(flood)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(writer.drain(), 2)  # the server stopped reading: our buffer fills
        [conn] = server.connections
        assert not conn._reading
        writer.transport.abort()
    finally:
        listener.close()
        await server.close()


# connection caps: new connections over them are closed at once and counted in /metrics

async def served(port: int, source: str = "127.0.0.1") -> asyncio.StreamWriter:
    """A kept-alive connection from `source` that the server took in: it answered on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(get("/healthz"))
    await asyncio.wait_for(reader.readuntil(b"ok\n"), 5)
    return writer


async def refused(port: int, source: str = "127.0.0.1") -> bool:
    """Whether a new connection from `source` is closed without an answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(get("/healthz", close=True))
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        answer = b""
    writer.close()
    return answer == b""


async def metric(app: Any, sample: str) -> float:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{app.port('admin')}/metrics") as resp:
            text = await resp.text()
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.rsplit(" ", 1)[0] == sample]
    return float(values[0]) if values else 0.0


async def test_connections_over_the_process_cap_are_closed_at_once(sink: Any, start_app: Any, tmp_path: Any) -> None:
    app = await start_relay(start_app, tmp_path, sink, http_max_connections="2")
    port = app.port("hits")
    held = [await served(port), await served(port, "127.0.0.2")]
    assert await refused(port, "127.0.0.3")
    assert await metric(app, 'trackrelay_http_connections_refused_total{reason="max_connections"}') == 1
    assert await metric(app, "trackrelay_http_connections_open") == 2
    held.pop().close()

    async def one_open() -> bool:
        return await metric(app, "trackrelay_http_connections_open") == 1

    await wait_until(one_open)
    held.append(await served(port, "127.0.0.3"))  # room again
    for writer in held:
        writer.close()


async def test_connections_over_the_per_address_cap_are_closed_at_once(
        sink: Any, start_app: Any, tmp_path: Any) -> None:
    app = await start_relay(start_app, tmp_path, sink, http_max_connections_per_ip="2", http_trusted_proxies="")
    port = app.port("hits")
    held = [await served(port), await served(port)]
    assert await refused(port)
    held.append(await served(port, "127.0.0.2"))  # another address has a count of its own
    assert await metric(app, 'trackrelay_http_connections_refused_total{reason="max_connections_per_ip"}') == 1
    for writer in held:
        writer.close()


async def test_a_trusted_proxy_is_not_capped_per_address(sink: Any, start_app: Any, tmp_path: Any) -> None:
    # the address known at accept is the TCP peer's: behind a proxy, every client shares it
    app = await start_relay(start_app, tmp_path, sink, http_max_connections_per_ip="2",
                            http_trusted_proxies="127.0.0.1/32")
    port = app.port("hits")
    held = [await served(port) for _ in range(3)]
    held += [await served(port, "127.0.0.2") for _ in range(2)]
    assert await refused(port, "127.0.0.2")  # any other address is capped
    for writer in held:
        writer.close()
