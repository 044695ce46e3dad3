"""One error root for the relay; expected outcomes are result values, not exceptions."""
from __future__ import annotations


class TrackrelayError(Exception):
    """Root of every error the relay raises on purpose."""


class ConfigError(TrackrelayError, ValueError):
    """A bad setting: the message names the key (or file) so start-up can print one clear line."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class StartupError(TrackrelayError):
    """Start-up failed for a reason outside the config file (port taken, store unreachable)."""


class StoreUnavailable(TrackrelayError, ConnectionError):
    """The store cannot be reached or written right now; callers retry later."""


class StoreConflict(TrackrelayError, ValueError):
    """The write conflicts with stored rows (a taken email, token or queue id; a row it
    refers to is gone): retrying will not help."""

