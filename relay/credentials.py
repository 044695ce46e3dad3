"""The users' SMTP logins kept in memory for upstream.auth = passthrough. No I/O.

Its own module: the listener fills it and delivery reads it, and delivery (a process of its
own) should not import the SMTP server to get it.
"""
from __future__ import annotations


class Credentials:
    """The last SMTP login of each user, in memory only, for upstream.auth = passthrough."""

    def __init__(self) -> None:
        self._by_user: dict[int, tuple[str, str]] = {}

    def remember(self, user_id: int, login: str, password: str) -> None:
        self._by_user[user_id] = (login, password)

    def get(self, user_id: int | None) -> tuple[str, str] | None:
        return None if user_id is None else self._by_user.get(user_id)
