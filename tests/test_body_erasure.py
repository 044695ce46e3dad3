"""Invariant 1's last clause for real: a delivered body leaves no copy in any store file."""
from __future__ import annotations

import secrets
from pathlib import Path

from conftest import relay_to
from hits_helpers import wait_until
from test_smtp_relay import send, simple_mail


def files_holding(directory: Path, marker: bytes) -> list[str]:
    return [f.name for f in directory.glob("relay.db*") if marker in f.read_bytes()]


async def test_bodies_delivered_moments_apart_leave_no_store_file(sink, start_app, tmp_path):
    app = await relay_to(sink, start_app, tmp_path)
    markers = [f"BODY-MARKER-{secrets.token_hex(8)}".encode() for _ in range(2)]
    for i, marker in enumerate(markers):  # the second erase comes well inside one checkpoint interval
        await send(app.port("smtp"), simple_mail(body=marker.decode() + "\n"))
        await sink.wait_for(i + 1)
    assert all(any(m in got.data for got in sink.messages) for m in markers)
    # nothing else happens now: the relay alone must get the bodies out of every file
    await wait_until(lambda: not any(files_holding(tmp_path, m) for m in markers), timeout=10, interval=0.1)
