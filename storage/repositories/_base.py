"""What the repositories share: an insert that tolerates a concurrent twin.

Nothing here knows a table; each repository module imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

T = TypeVar("T")


def add_unique(session: Session, row: T, find: Callable[[], T | None]) -> T:
    """Insert ``row``; if a concurrent transaction inserted the same unique key first,
    return that row instead (two first messages of one person at once, on any replica)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        existing = find()
        if existing is None:
            raise
        return existing
    return row
