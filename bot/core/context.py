"""The id of the event being handled, carried by every log line of its handling.

The core opens a scope (:func:`event_scope`, or the :func:`handles_event` decorator
on its ``on_*`` entry points) when an event enters it; the scope holds a short
random id in a :class:`contextvars.ContextVar`. Everything that runs inside that
handling (database work in ``asyncio.to_thread``, the reply sink, tasks it starts)
sees the same id, and a logging filter of the composition root puts it on each
record. A scope inside a scope keeps the outer id: one event, one id.

It knows nothing of logging set-up or of platforms.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_event_id: ContextVar[str | None] = ContextVar("chatloop_event_id", default=None)


def current_event_id() -> str | None:
    """The id of the event being handled here, or None outside any event."""
    return _event_id.get()


def new_event_id() -> str:
    """A fresh id: 12 hex characters, unique enough to follow one event through a log."""
    return secrets.token_hex(6)


@contextmanager
def event_scope(event_id: str | None = None) -> Iterator[str]:
    """Handle one event under an id (a fresh one unless given; the outer one if nested)."""
    outer = _event_id.get()
    if outer is not None:
        yield outer
        return
    token = _event_id.set(event_id or new_event_id())
    try:
        yield _event_id.get() or ""
    finally:
        _event_id.reset(token)


def handles_event(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run the decorated coroutine function in an :func:`event_scope`."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with event_scope():
            return await fn(*args, **kwargs)

    return wrapper
