"""`chatloop run` refuses loudly, `run --check` says why, `--version`, and exit codes.

Exit codes: 0 done, 1 the command could not do its work (configuration, database,
model), 2 a usage error only. None of the refusals here loads a model.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatloop.cli import app
from storage.db import head_revision

ROOT = Path(__file__).resolve().parents[1]
HEX_SIGNING = "0123456789abcdef0123456789abcdef"
BOT = "xoxb-1111-2222-thisisthebotsecret"
APP = "xapp-1-A1-2222-thisistheappsecret"
DISCORD = "MTAxMjM0NTY3ODkwMTIzNDU2.GaBcDe.thisisthediscordsecretpart12345"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Path:
    """No CHATLOOP_ variables but a fresh SQLite path and the tiny model; returns the DB path."""
    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    db = tmp_path / "data" / "bot.db"
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("CHATLOOP_MODEL", str(tiny_model_dir))
    monkeypatch.chdir(tmp_path)
    return db


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input="")  # stdin: not a terminal
    return result.exit_code, result.stdout, result.stderr


def test_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"chatloop {project['version']}"


@pytest.mark.parametrize(
    "args", [("run", "--bogus"), ("no-such-command",), ("db", "upgrade", "a", "b")]
)
def test_usage_errors_and_only_they_exit_2(args: tuple[str, ...]) -> None:
    assert invoke(*args)[0] == 2


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"CHATLOOP_SLACK_BOT_TOKEN": BOT}, "CHATLOOP_SLACK_SIGNING_SECRET"),
        ({"SLACK_BOT_TOKEN": BOT}, "CHATLOOP_SLACK_APP_TOKEN"),
        ({"SLACK_SIGNING_SECRET": HEX_SIGNING}, "CHATLOOP_SLACK_BOT_TOKEN"),
        ({"CHATLOOP_SLACK_APP_TOKEN": APP}, "CHATLOOP_SLACK_BOT_TOKEN"),
        ({"CHATLOOP_DISCORD_GUILD_IDS": "42"}, "CHATLOOP_DISCORD_TOKEN"),
        # a complete Slack beside a half-configured Discord still stops
        (
            {"SLACK_BOT_TOKEN": BOT, "SLACK_APP_TOKEN": APP, "CHATLOOP_DISCORD_CHANNEL_IDS": "7"},
            "CHATLOOP_DISCORD_TOKEN",
        ),
    ],
)
def test_run_stops_on_a_half_configured_platform_naming_the_variable(
    env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    code, out, err = invoke("run")
    assert code == 1 and named in err and "half-configured" in err
    assert not any(secret in out + err for secret in (BOT, APP, HEX_SIGNING))
    assert not env.exists()  # it stopped before touching the database or the model


def test_run_without_a_platform_and_without_a_terminal_says_so(env: Path) -> None:
    code, _, err = invoke("run")
    assert code == 1
    assert "no platform is configured and stdin is not a terminal" in err
    assert "CHATLOOP_SLACK_BOT_TOKEN" in err and "CHATLOOP_DISCORD_TOKEN" in err
    assert not env.exists()


def test_check_passes_on_a_fresh_setup_and_shows_no_secret(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT)
    monkeypatch.setenv("CHATLOOP_SLACK_SIGNING_SECRET", HEX_SIGNING)
    monkeypatch.setenv("DISCORD_TOKEN", DISCORD)
    code, out, _ = invoke("run", "--check")
    assert code == 0, out
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert " ok " in rows["settings"] and "HTTP Events API" in rows["slack"]
    assert "set (xoxb-…)" in rows["SLACK_BOT_TOKEN"]  # the name it came from
    assert " ok " in rows["CHATLOOP_SLACK_SIGNING_SECRET"] and " ok " in rows["DISCORD_TOKEN"]
    assert "does not exist yet" in rows["database"] and head_revision() in rows["database"]
    assert "model directory" in rows["model"]
    assert out.splitlines()[-1].startswith("ready")
    assert not any(secret in out for secret in (BOT, HEX_SIGNING, DISCORD, "thisis"))
    assert not env.exists()  # a check changes nothing


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SLACK_BOT_TOKEN", "xoxp-1111-user-token-secret", "set (xoxp-…), but a Slack bot token"),
        ("CHATLOOP_SLACK_BOT_TOKEN", "not-a-slack-token-secret", "set, but a Slack bot token"),
        ("CHATLOOP_SLACK_APP_TOKEN", "xoxb-1111-wrong-kind-secret", "set (xoxb-…), but an app"),
        ("CHATLOOP_DISCORD_TOKEN", f"Bot {DISCORD}", "'Bot ' prefix"),
        ("DISCORD_TOKEN", "short-secret", "not shaped like a Discord bot token"),
    ],
)
def test_check_fails_on_a_misshapen_token(
    env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    if "SLACK" in variable and "BOT" not in variable:
        monkeypatch.setenv("CHATLOOP_SLACK_BOT_TOKEN", BOT)
    elif "SLACK" in variable:
        monkeypatch.setenv("CHATLOOP_SLACK_SIGNING_SECRET", HEX_SIGNING)
    monkeypatch.setenv(variable, value)
    code, out, _ = invoke("run", "--check")
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith(variable + " "))
    assert " FAIL " in row and says in row
    assert "secret" not in out.replace("signing secret", "").replace("SIGNING_SECRET", "").lower()


def test_check_warns_on_an_odd_signing_secret_without_failing(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "not hex at all")
    code, out, _ = invoke("run", "--check")
    row = next(line for line in out.splitlines() if line.startswith("SLACK_SIGNING_SECRET"))
    assert code == 0 and " warn " in row and "not hex" not in out


def test_check_on_a_broken_database_url_fails_with_the_reason(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", "postgresql://bot:hunter2@127.0.0.1:1/chatloop")
    code, out, _ = invoke("run", "--check")
    row = next(line for line in out.splitlines() if line.startswith("database"))
    assert code == 1 and " FAIL " in row
    assert "connection" in row.lower() and "127.0.0.1" in row and "hunter2" not in out
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", "mysql://bot@db/chatloop")
    code, out, _ = invoke("run", "--check")
    assert code == 1 and out.startswith("check") and "settings" in out
    assert "CHATLOOP_DATABASE_URL" in out and "unsupported database 'mysql'" in out


def test_check_and_run_on_a_sqlite_file_at_an_unknown_revision(env: Path) -> None:
    from sqlalchemy import text

    from storage.db import make_engine, upgrade

    url = f"sqlite:///{env}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = 'beef'"))
    engine.dispose()
    code, out, _ = invoke("run", "--check")
    assert code == 1 and "beef, unknown to this code" in out


@pytest.mark.postgres
def test_postgresql_without_schema_is_refused_unless_migrate(
    env: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: str
) -> None:
    from tests.conftest import _create_pg_database, _drop_pg_database

    name, url = _create_pg_database(postgres_server)
    try:
        monkeypatch.setenv("CHATLOOP_DATABASE_URL", url)
        monkeypatch.setenv("SLACK_BOT_TOKEN", BOT)
        monkeypatch.setenv("SLACK_APP_TOKEN", APP)
        code, out, _ = invoke("run", "--check")
        assert code == 1 and "chatloop db upgrade" in out and "--migrate" in out
        code, out, _ = invoke("run", "--check", "--migrate")
        assert code == 0 and "--migrate upgrades it" in out
        code, _, err = invoke("run")
        assert code == 1 and "run `chatloop db upgrade` once" in err and "Traceback" not in err
        code, out, _ = invoke("db", "current")
        assert "current: empty" in out  # neither the check nor the refused run migrated
    finally:
        _drop_pg_database(postgres_server, name)
