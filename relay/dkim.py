"""No I/O: DKIM-sign a message after the rewrite (dkimpy), so unsigned providers still get valid mail."""
from __future__ import annotations

import dkim

SIGNED_HEADERS = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"mime-version", b"content-type", b"content-transfer-encoding", b"list-unsubscribe")


def sign(data: bytes, *, domain: str, selector: str, private_key: bytes) -> bytes:
    """Return data with a DKIM-Signature header prepended (relaxed/relaxed, rsa-sha256 or ed25519)."""
    signature = dkim.sign(data, selector.encode(), domain.encode(), private_key,
                          canonicalize=(b"relaxed", b"relaxed"), include_headers=list(SIGNED_HEADERS))
    return signature + data
