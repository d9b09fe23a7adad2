"""Migrations: up and down on SQLite and PostgreSQL, and in step with the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import (
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    make_engine,
    upgrade,
)
from storage.errors import DatabaseUnavailable
from storage.models import Base

TABLES = {
    "workspaces", "users", "conversations", "messages", "replies", "feedback", "flags",
    "adapters", "dataset_snapshots", "snapshot_sources", "learning_runs",
    "processed_events", "audit_log",
}  # fmt: skip


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    engine = make_engine(empty_db_url)
    with pytest.raises(DatabaseUnavailable, match="chatloop db upgrade"):
        check_schema(engine)
    upgrade(empty_db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert current_revision(engine) == head_revision()
    check_schema(engine)

    downgrade(empty_db_url, "base")
    engine.dispose()
    engine = make_engine(empty_db_url)
    assert not TABLES & set(inspect(engine).get_table_names())
    assert current_revision(engine) is None

    upgrade(empty_db_url)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    """A model change without a migration fails here (autogenerate finds no diff)."""
    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    engine.dispose()
    assert (tmp_path / "sub" / "x.db").exists()
