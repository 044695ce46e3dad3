"""relay.dkim: the relay's own signature over the rewritten copy, checked by dkimpy's verifier."""
from __future__ import annotations

import base64

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.dkim import DkimError, sign
from relay.rewrite import RewritePlan, rewrite_message

MESSAGE = (
    b"From: Shop <news@shop.example>\r\nTo: bob@example.org\r\nSubject: Autumn sale\r\n"
    b"Date: Tue, 15 Oct 2024 08:30:00 +0200\r\nMessage-ID: <1@shop.example>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    b'<html><body><a href="https://shop.example/sale?a=1&amp;b=2">Sale</a></body></html>\r\n'
)
PLAN = RewritePlan(opens=True, clicks=True, pixel_url="http://t.example/o/P.gif",
                   click_base="http://t.example/c/T/", own_prefix="http://t.example")


@pytest.fixture(scope="module")
def key() -> tuple[bytes, bytes]:
    """(PEM private key, DNS TXT record publishing its public half)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def verify(data: bytes, txt: bytes) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return txt if name == b"mail._domainkey.shop.example." else None

    return dkimpy.verify(data, dnsfunc=dns)


def test_the_signature_is_prepended_and_verifies(key: tuple[bytes, bytes]) -> None:
    pem, txt = key
    signed = sign(MESSAGE, domain="shop.example", selector="mail", private_key=pem)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(MESSAGE)
    assert b"d=shop.example" in signed and b"s=mail" in signed and b"c=relaxed/relaxed" in signed
    assert verify(signed, txt)


def test_the_signature_covers_the_rewritten_body(key: tuple[bytes, bytes]) -> None:
    pem, txt = key
    rewritten = rewrite_message(MESSAGE, PLAN).data
    assert rewritten != MESSAGE
    signed = sign(rewritten, domain="shop.example", selector="mail", private_key=pem)
    assert verify(signed, txt)
    assert not verify(signed.replace(b"/c/T/0", b"/c/T/1"), txt)


def test_a_lf_message_gets_a_lf_folded_signature(key: tuple[bytes, bytes]) -> None:
    pem, txt = key
    message = MESSAGE.replace(b"\r\n", b"\n")
    signed = sign(message, domain="shop.example", selector="mail", private_key=pem)
    assert b"\r" not in signed and verify(signed, txt)


@pytest.mark.parametrize(("domain", "private_key"), [
    ("shop.example", b"-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n"),
    ("bücher.example", None),
])
def test_an_unusable_key_or_domain_is_a_clear_error(key: tuple[bytes, bytes], domain: str,
                                                    private_key: bytes | None) -> None:
    with pytest.raises(DkimError, match="mail._domainkey"):
        sign(MESSAGE, domain=domain, selector="mail", private_key=private_key or key[0])
