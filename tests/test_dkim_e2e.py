"""DKIM end to end: a tracked mail through the relay is signed with the configured key, and the
delivered copy verifies with dkimpy against the published TXT record. Mail the client signed
already is rewritten and re-signed with dkim.resign = true (the default, leaving it intact, is
in test_tracking_e2e.py)."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import add_user, make_config
from test_smtp_relay import send, wait_status
from test_tracking_e2e import TOKEN, html_mail

DOMAIN, SELECTOR = "relay.example", "tr2026"
CLIENT_DOMAIN, CLIENT_SELECTOR = "example.com", "s1"


def new_key() -> tuple[bytes, bytes]:
    """(PEM private key, the DNS TXT record publishing its public half)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[bytes, bytes]]:
    return {"relay": new_key(), "client": new_key()}


def dns_for(keys: dict[str, tuple[bytes, bytes]]):
    records = {f"{SELECTOR}._domainkey.{DOMAIN}": keys["relay"][1],
               f"{CLIENT_SELECTOR}._domainkey.{CLIENT_DOMAIN}": keys["client"][1]}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    return dnsfunc


def signature_domains(data: bytes) -> list[str]:
    """d= of each DKIM-Signature header, in header order."""
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    return [m.group(1).decode() for m in re.finditer(rb"(?im)^DKIM-Signature:.*?\bd=([^;\s]+)", head)]


async def signing_relay(sink, start_app, tmp_path: Path, keys, **overrides: str):
    key_file = tmp_path / "dkim.key"
    key_file.write_bytes(keys["relay"][0])
    key_file.chmod(0o600)
    app = await start_app(make_config(tmp_path, f"smtp://127.0.0.1:{sink.port}", dkim_domain=DOMAIN,
                                      dkim_selector=SELECTOR, dkim_key_file=str(key_file), **overrides))
    await add_user(app)
    return app


async def test_a_tracked_copy_is_signed_and_verifies(sink, start_app, tmp_path, keys):
    app = await signing_relay(sink, start_app, tmp_path, keys)
    rcpts = ["bob@example.org", "carol@example.net"]
    await send(app.port("smtp"), html_mail(extra_headers="X-Track: on\r\n"), rcpts=rcpts)
    got = await sink.wait_for(2)
    dns = dns_for(keys)
    for m in got:  # each recipient's own rewritten copy carries its own valid signature
        assert TOKEN.search(m.data), "the copy was not rewritten"
        assert m.data.startswith(b"DKIM-Signature:") and signature_domains(m.data) == [DOMAIN]
        assert f"s={SELECTOR}".encode() in m.data.split(b"\r\n\r\n", 1)[0]
        assert dkimpy.verify(m.data, dnsfunc=dns), m.data.decode()
        # and the signature really covers the rewritten body
        tampered = TOKEN.sub(b"/o/forged.gif", m.data, count=1)
        assert tampered != m.data and not dkimpy.verify(tampered, dnsfunc=dns)
    await wait_status(app, 1, "sent")


async def test_an_untracked_mail_is_not_touched(sink, start_app, tmp_path, keys):
    # nothing was rewritten, so the client's bytes (and any signature of theirs) go out as they came
    app = await signing_relay(sink, start_app, tmp_path, keys)
    data = html_mail()
    await send(app.port("smtp"), data, rcpts=["bob@example.org"])
    [m] = await sink.wait_for(1)
    assert m.data == data


async def test_with_resign_a_client_signed_mail_is_rewritten_and_signed_again(sink, start_app, tmp_path, keys):
    app = await signing_relay(sink, start_app, tmp_path, keys, dkim_resign="true")
    original = html_mail(extra_headers="X-Track: on\r\n")
    client_signature = dkimpy.sign(original, CLIENT_SELECTOR.encode(), CLIENT_DOMAIN.encode(), keys["client"][0],
                                   canonicalize=(b"relaxed", b"relaxed"), linesep=b"\r\n")
    signed = client_signature + original
    dns = dns_for(keys)
    assert dkimpy.verify(signed, dnsfunc=dns)  # a genuine client signature to begin with
    await send(app.port("smtp"), signed, rcpts=["bob@example.org"])
    [m] = await sink.wait_for(1)
    assert TOKEN.search(m.data), "resign = true, yet the signed mail was not rewritten"
    assert b"X-Track" not in m.data
    # ours comes first and verifies; the client's, over the old body, no longer would
    assert signature_domains(m.data) == [DOMAIN, CLIENT_DOMAIN]
    assert dkimpy.verify(m.data, dnsfunc=dns), m.data.decode()
    with pytest.raises(dkimpy.ValidationError, match="body hash mismatch"):
        dkimpy.DKIM(m.data).verify(idx=1, dnsfunc=dns)
    row = await wait_status(app, 1, "sent")
    assert row["rewrite_note"] != "dkim-signed"
