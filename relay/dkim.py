"""DKIM-sign a message after tracking rewrote it. No I/O.

Rewriting changes the body, so the relay signs the copy it sends with its own key
(dkimpy does the cryptography); the receiver then sees a valid signature for the
relay's domain instead of a broken one.
"""
from __future__ import annotations

import dkim as dkimpy

from relay.errors import TrackrelayError

__all__ = ["DkimError", "check_key", "sign"]

# relaxed/relaxed survives the whitespace changes and header refolding of later hops.
_CANONICALIZE = (b"relaxed", b"relaxed")


class DkimError(TrackrelayError, ValueError):
    """The key, the domain/selector or the message cannot be used for a signature."""


def check_key(*, domain: str, selector: str, private_key: bytes) -> None:
    """Raises DkimError unless a message can be signed with these: found at start, not at delivery."""
    sign(b"From: check@" + domain.encode("ascii", "replace") + b"\r\n\r\n.\r\n",
         domain=domain, selector=selector, private_key=private_key)


def sign(data: bytes, *, domain: str, selector: str, private_key: bytes) -> bytes:
    """The message with a DKIM-Signature header (rsa-sha256, PEM key) prepended."""
    first_line = data.split(b"\n", 1)[0]
    linesep = b"\r\n" if first_line.endswith(b"\r") else b"\n"  # fold the new header like the message
    try:
        signature = dkimpy.sign(
            data,
            selector.encode("ascii"),
            domain.encode("ascii"),
            private_key,
            canonicalize=_CANONICALIZE,
            linesep=linesep,
        )
    except (dkimpy.DKIMException, UnicodeEncodeError, ValueError) as exc:
        raise DkimError(f"cannot DKIM-sign for {selector}._domainkey.{domain}: {exc}") from exc
    return signature + data
