"""The admin listener as an attacker sees it: what its answers give away, its cookies
behind TLS, its login throttle. Real relay on port 0, real aiohttp clients."""
from __future__ import annotations

import asyncio

from panel_helpers import client, start_panel, url


async def raw_answer(port: int, request: bytes) -> bytes:
    """Send bytes as they are (a malformed request, say) and read the answer's header block."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


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
