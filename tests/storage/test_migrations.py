"""Migrations: up and down on SQLite and PostgreSQL, and in step with the models."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

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
    "processed_events", "audit_log", "reply_parts",
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


def test_reply_parts_up_and_down(empty_db_url: str) -> None:
    """0005 adds the reply parts beside existing replies and takes only them away again."""
    upgrade(empty_db_url, "0004")
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        for sql in (
            "INSERT INTO users (id, platform, external_id, role, created_at)"
            " VALUES (1, 'slack', 'U1', 'customer', CURRENT_TIMESTAMP)",
            "INSERT INTO conversations (id, platform, channel_id, thread_id, kind, created_at)"
            " VALUES (1, 'slack', 'C1', '', 'channel', CURRENT_TIMESTAMP)",
            "INSERT INTO messages (id, conversation_id, user_id, raw_text, char_count, created_at)"
            " VALUES (1, 1, 1, 'q', 1, CURRENT_TIMESTAMP)",
            "INSERT INTO replies (id, message_id, conversation_id, platform_message_id, text,"
            " finish_reason, adapter_version, model_id, replica_id, generation, latency_ms,"
            " prompt_tokens, completion_tokens, created_at) VALUES (1, 1, 1, '1.2', 'a',"
            " 'stop', 'base', 'm', 'r', '{}', 1.0, 1, 1, CURRENT_TIMESTAMP)",
        ):
            conn.execute(text(sql))
    upgrade(empty_db_url, "0005")
    assert "reply_parts" in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO reply_parts (reply_id, platform, channel_id, platform_message_id,"
                " part_index, created_at) VALUES (1, 'slack', 'C1', '1.1', 0, CURRENT_TIMESTAMP),"
                " (1, 'slack', 'C1', '1.2', 1, CURRENT_TIMESTAMP)"
            )
        )
    downgrade(empty_db_url, "0004")
    engine.dispose()
    engine = make_engine(empty_db_url)
    assert "reply_parts" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT platform_message_id FROM replies")).all() == [("1.2",)]
    upgrade(empty_db_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    engine.dispose()
    assert (tmp_path / "sub" / "x.db").exists()
