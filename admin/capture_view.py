"""A captured copy's HTML for the panel's sandboxed frame (pure): looking at it must record
nothing and go nowhere. The frame's CSP blocks every load but inline data (so no pixel and
no remote image is fetched); here links, forms and refreshes lose their targets."""
from __future__ import annotations

import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

# attributes that would make the browser go somewhere or fetch something when clicked or
# parsed; renamed, not removed, so the markup keeps its shape (one linear pass)
_ACTIVE = re.compile(rb"(?i)(?<=[\s\"'/])(href|action|formaction|http-equiv|src|srcset|background|ping)(\s*=)")


def html_part(raw: bytes) -> str | None:
    """The copy's HTML body, decoded; None when it has none."""
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    if part is None:
        return None
    try:
        return part.get_content()
    except (LookupError, ValueError):  # an unknown charset or a broken encoding
        return None


def neutralised(html: str) -> bytes:
    return _ACTIVE.sub(rb"data-inert-\1\2", html.encode("utf-8", "replace"))
