"""Shared fixtures: tiny models, databases on SQLite and PostgreSQL, fakes at boundaries.

PostgreSQL: tests marked or parametrized with ``postgres`` create a fresh database on
the server named by ``CHATLOOP_TEST_POSTGRES_URL`` (default: the local server,
database ``test``) and drop it afterwards. Without a reachable server they skip,
except in CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, session_factory, upgrade

PG_ADMIN_URL = os.environ.get(
    "CHATLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    problem = _postgres_reachable()
    if problem:
        if IN_CI:
            pytest.fail(
                f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {problem}"
            )
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {problem}")
    return PG_ADMIN_URL


def _create_pg_database(admin_url: str) -> tuple[str, str]:
    name = f"chatloop_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_pg_database(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chatloop.db'}"
        return
    admin = request.getfixturevalue("postgres_server")
    name, url = _create_pg_database(admin)
    try:
        yield url
    finally:
        _drop_pg_database(admin, name)


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """A database URL migrated to the newest schema."""
    upgrade(empty_db_url)
    return empty_db_url


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from serving.model import load_model

    return load_model(
        str(tiny_model_dir),
        cache_dir=tmp_path_factory.mktemp("cache"),
        device="cpu",
        dtype="float32",
    )


def run(coro: Any) -> Any:
    """Run a coroutine to completion (tests use plain asyncio, no plugin)."""
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def _no_operator_platform_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings also read SLACK_BOT_TOKEN & co.: a developer's own tokens never reach a test."""
    from chatloop.settings import ENV_ALIASES

    for name in ENV_ALIASES.values():
        monkeypatch.delenv(name, raising=False)
