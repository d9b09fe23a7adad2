"""The database schema when the bot starts: create it, upgrade it, or say why not.

``chatloop run`` and ``chatloop chat`` call :func:`prepare_database` before they
open the database:

- **SQLite** (the embedded default, one process): an empty or older database is
  created or upgraded to the newest migration on the spot, and the change is logged.
- **PostgreSQL** (shared by replicas): an outdated schema is refused with a message
  naming the fix (``chatloop db upgrade``, or ``chatloop run --migrate``), because
  replicas starting together must not race migrations. With ``migrate=True`` the
  upgrade runs under a PostgreSQL advisory lock, so replicas that all pass
  ``--migrate`` still migrate once.
- A database at a revision this code does not know (migrated by a newer release)
  is refused on both.

It knows nothing of models or platforms; the migrations themselves are storage's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from storage.db import current_revision, head_revision, make_engine, normalize_url, upgrade
from storage.errors import DatabaseUnavailable, MigrationError

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x63686174_6C6F6F70 >> 1
"""PostgreSQL advisory lock held while ``--migrate`` upgrades ("chatloop", as a bigint)."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where a database's schema stands against this code's migrations."""

    backend: str
    current: str | None
    head: str
    known: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    def describe(self) -> str:
        if self.up_to_date:
            return f"revision {self.current} (the newest)"
        if self.current is None:
            return f"empty (no schema yet; the code needs {self.head})"
        if not self.known:
            return f"revision {self.current}, unknown to this code (newest here: {self.head})"
        return f"revision {self.current}, older than the code's {self.head}"


def backend_of(url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    return make_url(normalize_url(url)).get_backend_name()


def safe_url(url: str) -> str:
    """The URL with its password masked, fit for a log line or a terminal."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(resources.files("storage") / "migrations"))
    return {rev.revision for rev in scripts.walk_revisions()}


def schema_state(engine: Engine) -> SchemaState:
    """Read the database's revision (raises :class:`DatabaseUnavailable` when unreachable)."""
    current = current_revision(engine)
    return SchemaState(
        backend=engine.dialect.name,
        current=current,
        head=head_revision(),
        known=current is None or current in _known_revisions(),
    )


def refusal(state: SchemaState) -> str | None:
    """Why ``chatloop run`` (without ``--migrate``) would not start on this schema, or None."""
    if state.up_to_date:
        return None
    if not state.known:
        return (
            f"the database is at {state.describe()}: a newer chatloop migrated it; "
            "run that version, or restore a backup"
        )
    if state.backend == "sqlite":
        return None  # created or upgraded at start
    return (
        f"the database schema is {state.describe()}: run `chatloop db upgrade` once "
        "(or start one replica with `chatloop run --migrate`)"
    )


def prepare_database(
    url: str, *, migrate: bool = False, progress: Callable[[str], None] | None = None
) -> SchemaState:
    """Make the schema at ``url`` current where that is safe; raise where it is not.

    Returns the state after any upgrade. Raises :class:`DatabaseUnavailable` when the
    database cannot be reached or must not be changed here, :class:`MigrationError`
    when an upgrade fails.
    """
    try:
        engine = make_engine(url)
    except OSError as exc:  # SQLite: the file's directory cannot be created
        raise DatabaseUnavailable(f"cannot create the database at {safe_url(url)}: {exc}") from exc
    try:
        state = schema_state(engine)
        if state.up_to_date:
            return state
        if not state.known or (state.backend != "sqlite" and not migrate):
            reason = refusal(state) or state.describe()
            raise DatabaseUnavailable(reason)
        if state.backend == "postgresql":
            return _upgrade_locked(engine, url, progress)
        return _upgrade(engine, url, state, progress)
    finally:
        engine.dispose()


def _upgrade(
    engine: Engine, url: str, state: SchemaState, progress: Callable[[str], None] | None
) -> SchemaState:
    action = "creating the schema" if state.current is None else "upgrading the schema"
    message = f"{action} of {safe_url(url)}: {state.current or 'empty'} -> {state.head}"
    log.info(message, extra={"from_revision": state.current, "to_revision": state.head})
    if progress is not None:
        progress(message)
    try:
        upgrade(url)
    except MigrationError:
        raise
    except Exception as exc:  # alembic's own errors (CommandError) are not SQLAlchemy's
        raise MigrationError(f"upgrade to {state.head} failed: {exc}") from exc
    after = schema_state(engine)
    log.info("database schema ready", extra={"revision": after.current})
    return after


def _upgrade_locked(
    engine: Engine, url: str, progress: Callable[[str], None] | None
) -> SchemaState:
    """Upgrade PostgreSQL while holding the migration advisory lock (replicas queue on it)."""
    try:
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                state = schema_state(engine)  # another replica may have migrated meanwhile
                if state.up_to_date:
                    return state
                return _upgrade(engine, url, state, progress)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                lock.commit()
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"cannot take the migration lock: {exc}") from exc
