"""The learner lock: at most one learning cycle runs at a time, across every replica.

::

    with learner_lock(sessions, lock_dir=Path("var")) as held:
        if not held:
            return "busy"          # another process is learning
        ...                        # train, evaluate, register

- **PostgreSQL**: ``pg_try_advisory_lock(key)`` on a connection taken for the whole
  block and used for nothing else. An advisory lock belongs to the database session,
  so it is released by ``pg_advisory_unlock`` when the block ends, and by the server
  when the connection closes: a learner killed with SIGKILL (or whose host vanishes,
  once the server notices the dead TCP connection) leaves no stale lock behind. The
  connection is discarded afterwards, never returned to the pool still holding it.
- **SQLite** (one machine): ``fcntl.flock`` on ``<lock_dir>/learner.lock``. The kernel
  drops the lock when the file is closed, including when the process dies. Every
  process that learns from the same SQLite file must use the same ``lock_dir``; by
  default it is the directory of the database file.

Never blocking: a busy lock answers ``False`` at once (or :class:`LockBusy` with
``require=True``). The key is a 64-bit hash of ``"chatloop:" + name``, so other
advisory locks of the same database do not collide with it. Limit: if the PostgreSQL
connection breaks while the block runs, the server releases the lock and another
learner may start; the holder only learns of it at its next database write. The
cycle therefore registers its results in transactions that check the registry's
state, and does not rely on the lock alone for correctness.

This module knows nothing of training: it is a mutual exclusion primitive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from learning.errors import LearningError

log = logging.getLogger(__name__)

LOCK_FILE = "learner.lock"


class LockError(LearningError):
    """The learner lock could not be taken or checked (not: it is busy)."""


class LockBusy(LockError):
    """Another process holds the learner lock."""


def advisory_key(name: str) -> int:
    """The signed 64-bit PostgreSQL advisory lock key of a lock name."""
    digest = hashlib.sha256(f"chatloop:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _engine_of(target: Engine | sessionmaker[Session]) -> Engine:
    if isinstance(target, Engine):
        return target
    bind = target.kw.get("bind")
    if not isinstance(bind, Engine):
        raise LockError("the session factory is not bound to an engine")
    return bind


def default_lock_dir(engine: Engine) -> Path:
    """Where the SQLite file lock lives unless configured: beside the database file."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise LockError("an in-memory SQLite database needs an explicit lock directory")
    return Path(database).expanduser().resolve().parent


@contextlib.contextmanager
def learner_lock(
    target: Engine | sessionmaker[Session],
    *,
    lock_dir: Path | None = None,
    name: str = "learner",
    require: bool = False,
) -> Iterator[bool]:
    """Hold the learner lock for the block; yields whether it was obtained.

    ``require=True`` raises :class:`LockBusy` instead of yielding ``False``.
    """
    engine = _engine_of(target)
    if engine.dialect.name == "postgresql":
        held_cm = _postgres_lock(engine, name)
    elif engine.dialect.name == "sqlite":
        held_cm = _file_lock((lock_dir or default_lock_dir(engine)) / _file_name(name))
    else:  # pragma: no cover - settings refuse other databases
        raise LockError(f"no learner lock for {engine.dialect.name}")
    with held_cm as held:
        if not held and require:
            raise LockBusy(f"another process holds the {name} lock")
        yield held


def _file_name(name: str) -> str:
    return LOCK_FILE if name == "learner" else f"{name}.lock"


@contextlib.contextmanager
def _postgres_lock(engine: Engine, name: str) -> Iterator[bool]:
    key = advisory_key(name)
    try:
        conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError as exc:
        raise LockError(f"cannot reach the database for the learner lock: {exc}") from exc
    try:
        try:
            held = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        except SQLAlchemyError as exc:
            raise LockError(f"cannot take the learner lock: {exc}") from exc
        if held:
            log.info("learner lock taken", extra={"lock": name, "backend": "postgresql"})
        try:
            yield held
        finally:
            if held:
                try:
                    conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                except SQLAlchemyError as exc:  # closing the connection releases it anyway
                    log.warning("learner unlock failed", extra={"error": str(exc)})
    finally:
        # never hand a connection that may still hold the lock back to the pool
        conn.invalidate()
        conn.close()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise LockError(f"cannot open the lock file {path}: {exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        except OSError as exc:
            raise LockError(f"cannot lock {path}: {exc}") from exc
        if held:
            # who holds it, for a person looking at the file; the lock is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            log.info("learner lock taken", extra={"lock": str(path), "backend": "file"})
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["LockBusy", "LockError", "advisory_key", "default_lock_dir", "learner_lock"]
