"""The schema at start: SQLite is created or upgraded, PostgreSQL only with --migrate."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from chatloop.schema import prepare_database, safe_url, schema_state
from storage.db import head_revision, make_engine, upgrade
from storage.errors import DatabaseUnavailable


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return schema_state(engine).current
    finally:
        engine.dispose()


def test_an_empty_sqlite_file_gets_the_schema_and_it_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'new.db'}"
    said: list[str] = []
    with caplog.at_level(logging.INFO, logger="chatloop.schema"):
        state = prepare_database(url, progress=said.append)
    assert state.up_to_date and _revision(url) == head_revision()
    assert any("creating the schema" in r.getMessage() for r in caplog.records)
    assert said and f"empty -> {head_revision()}" in said[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="chatloop.schema"):
        assert prepare_database(url).up_to_date  # a second start changes nothing
    assert caplog.records == []


def test_an_older_sqlite_schema_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    assert _revision(url) == "0001"
    said: list[str] = []
    prepare_database(url, progress=said.append)
    assert _revision(url) == head_revision()
    assert said and "upgrading the schema" in said[0] and "0001 ->" in said[0]


def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseUnavailable, match="9999, unknown to this code"):
        prepare_database(url, migrate=True)


@pytest.mark.postgres
def test_postgresql_is_refused_without_migrate_and_upgraded_with_it(
    postgres_server: str,
) -> None:
    from tests.conftest import _create_pg_database, _drop_pg_database

    name, url = _create_pg_database(postgres_server)
    try:
        with pytest.raises(DatabaseUnavailable) as refused:
            prepare_database(url)
        assert "chatloop db upgrade" in str(refused.value) and "--migrate" in str(refused.value)
        assert _revision(url) is None  # nothing was touched
        errors: list[BaseException] = []

        def replica() -> None:
            try:
                prepare_database(url, migrate=True)
            except BaseException as exc:  # the test reports it below
                errors.append(exc)

        # three replicas started together with --migrate: the advisory lock lets one migrate
        replicas = [threading.Thread(target=replica) for _ in range(3)]
        for t in replicas:
            t.start()
        for t in replicas:
            t.join(timeout=120)
        assert errors == [] and _revision(url) == head_revision()
        assert prepare_database(url).up_to_date  # now plain starts pass
    finally:
        _drop_pg_database(postgres_server, name)


def test_urls_shown_hide_the_password() -> None:
    shown = safe_url("postgresql://bot:hunter2@db:5432/chatloop")
    assert "hunter2" not in shown and shown.startswith("postgresql+psycopg://bot:***@db")
