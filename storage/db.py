"""Database engine, sessions and migrations.

``make_engine(url)`` builds a SQLAlchemy engine: SQLite gets WAL journaling,
foreign keys, a busy timeout and ``synchronous=NORMAL`` on every connection (and
its parent directory is created); PostgreSQL URLs (``postgresql://`` or
``postgresql+psycopg://``) use psycopg 3. ``upgrade(url)`` / ``downgrade(url)``
apply the Alembic migrations shipped in ``storage/migrations``; nothing creates
tables behind the migrations' back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from storage.errors import DatabaseUnavailable, MigrationError

log = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def libpq_dsn(url: str) -> str | None:
    """A psycopg/libpq connection string for a PostgreSQL URL, None for other databases."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "postgresql":
        return None
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, *, echo: bool = False, poolclass: type[Pool] | None = None) -> Engine:
    """A SQLAlchemy engine for ``url`` with chatloop's connection settings.

    ``hide_parameters``: a database error's message never carries the statement's
    parameters, which are message text and user ids (it is logged and shown).
    """
    url = normalize_url(url)
    extra: dict[str, Any] = {"poolclass": poolclass} if poolclass else {}
    extra["hide_parameters"] = True
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False}, **extra)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, **extra)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("storage") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (default: the newest)."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(url), revision)
    except SQLAlchemyError as exc:
        raise MigrationError(f"upgrade to {revision} failed: {exc}") from exc


def downgrade(url: str, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (default: an empty database)."""
    from alembic import command

    try:
        command.downgrade(_alembic_config(url), revision)
    except SQLAlchemyError as exc:
        raise MigrationError(f"downgrade to {revision} failed: {exc}") from exc


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"cannot read the schema version: {exc}") from exc


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def check_schema(engine: Engine) -> None:
    """Raise a clear error when the database is not at the newest migration."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        tables = inspect(engine).get_table_names()
        hint = "an empty database" if not tables else f"revision {current}"
        raise DatabaseUnavailable(
            f"the database is at {hint}, the code needs {head}: run `chatloop db upgrade`"
        )
