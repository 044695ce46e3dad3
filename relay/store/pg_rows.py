"""A small helper every PostgreSQL module shares."""
from __future__ import annotations


def affected(status: str) -> int:
    """asyncpg's command tag ("UPDATE 1", "INSERT 0 1") -> rows affected."""
    return int(status.rsplit(" ", 1)[-1])
