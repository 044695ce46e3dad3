"""SQLite queries behind the JSON API and the panel (reports over messages, hits, notifications)."""
from __future__ import annotations


class ReportsMixin:
    """Mixed into SqliteStore; uses its self._runner."""
