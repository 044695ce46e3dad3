"""The opt-out pages a recipient sees at /p/<token>. No I/O.

Self-contained: inline style, no scripts, no remote content, and every value escaped.
"""
from __future__ import annotations

from html import escape

_STYLE = ("body{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#222}"
          "h1{font-size:1.4em}label{display:block;margin:1em 0 .3em}"
          "input{font:inherit;padding:.4em;width:100%;box-sizing:border-box}"
          "button{font:inherit;margin-top:1em;padding:.5em 1.2em;cursor:pointer}")


def confirm_page(relay: str, *, ask_address: bool, error: str = "") -> bytes:
    """The page GET shows: it changes nothing; its button POSTs back to the same URL."""
    field = ('<label for="email">Your email address, as this message was sent to it:</label>'
             '<input type="email" id="email" name="email" required autocomplete="email">') if ask_address else ""
    notice = f'<p role="alert"><strong>{escape(error)}</strong></p>' if error else ""
    return _page("Stop tracking", (
        "<h1>Stop tracking?</h1>"
        f"<p>This message was sent through {escape(relay)}, which records when its mail is opened and "
        "its links are clicked. Confirm, and mail it relays to you will no longer be tracked.</p>"
        f'{notice}<form method="post">{field}<button type="submit">Stop tracking me</button></form>'))


def done_page(relay: str, address: str | None) -> bytes:
    """The answer to a POST. For a shared copy it says the same whether the address typed
    was a recipient or not: the page must not tell who received the message."""
    if address is None:
        text = f"Mail that {escape(relay)} relays to you will no longer be tracked."
    else:
        text = (f"If {escape(address)} is one of this message's recipients, mail that {escape(relay)} "
                "relays to it will no longer be tracked.")
    return _page("Tracking stopped", f"<h1>Tracking stopped</h1><p>{text}</p>")


def _page(title: str, body: str) -> bytes:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="robots" content="noindex"><title>{escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>").encode("utf-8")
