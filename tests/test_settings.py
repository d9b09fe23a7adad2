"""Settings: defaults, environment, TOML, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatloop.settings import DEFAULT_MODEL, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    # load_settings(file) exports CHATLOOP_CONFIG for child processes; undo it afterwards
    monkeypatch.setenv("CHATLOOP_CONFIG", "")
    monkeypatch.delenv("CHATLOOP_CONFIG")
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults() -> None:
    s = load_settings()
    assert s.model == DEFAULT_MODEL
    assert s.database_url.startswith("sqlite:///") and "var/" in s.database_url
    assert (s.device, s.dtype) == ("auto", "auto")
    assert not s.slack_enabled and not s.discord_enabled
    assert s.max_new_tokens < s.max_context_tokens


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", "postgresql://chat@db:5432/chatloop")
    monkeypatch.setenv("CHATLOOP_MAINTAINERS", "slack:U1, discord:42")
    monkeypatch.setenv("CHATLOOP_STAFF", '["discord-role:7"]')
    monkeypatch.setenv("CHATLOOP_SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("CHATLOOP_SLACK_SIGNING_SECRET", "shh")
    s = load_settings()
    assert s.maintainers == ["slack:U1", "discord:42"] and s.staff == ["discord-role:7"]
    assert s.slack_enabled
    shown = s.redacted()
    assert shown["slack_bot_token"] == "********" and "xoxb-secret" not in repr(s)


def test_empty_credentials_leave_a_platform_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_DISCORD_TOKEN", "")
    monkeypatch.setenv("CHATLOOP_SLACK_BOT_TOKEN", "")
    monkeypatch.setenv("CHATLOOP_SLACK_SIGNING_SECRET", "")
    s = load_settings()
    assert not s.discord_enabled and not s.slack_enabled
    monkeypatch.setenv("CHATLOOP_DISCORD_TOKEN", "token")
    assert load_settings().discord_enabled


def test_errors_name_the_setting_and_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_MAX_NEW_TOKENS", "lots")
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", "mysql://x@y/z")
    monkeypatch.setenv("CHATLOOP_MAINTAINERS", "alice")
    monkeypatch.setenv("CHATLOOP_DEVICE", "tpu")
    with pytest.raises(SettingsError) as info:
        load_settings()
    msg = str(info.value)
    assert "max_new_tokens (CHATLOOP_MAX_NEW_TOKENS)" in msg
    assert "unsupported database 'mysql'" in msg
    assert "'alice' must look like 'platform:user_id'" in msg
    assert "CHATLOOP_DEVICE" in msg


def test_budget_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_MAX_NEW_TOKENS", "512")
    monkeypatch.setenv("CHATLOOP_MAX_CONTEXT_TOKENS", "256")
    with pytest.raises(SettingsError, match="must be smaller than max_context_tokens"):
        load_settings()


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('modle = "typo"\n')
    with pytest.raises(SettingsError, match="modle"):
        load_settings(cfg)


def test_toml_file_and_env_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "chatloop.toml"
    cfg.write_text('model = "/models/other"\nmax_new_tokens = 64\nstaff = ["slack:U9"]\n')
    monkeypatch.setenv("CHATLOOP_MAX_NEW_TOKENS", "32")
    s = load_settings(cfg)
    assert s.model == "/models/other" and s.staff == ["slack:U9"]
    assert s.max_new_tokens == 32  # the environment wins over the file


def test_secrets_are_refused_in_the_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "chatloop.toml"
    cfg.write_text('discord_token = "abc"\n')
    with pytest.raises(SettingsError, match="CHATLOOP_DISCORD_TOKEN"):
        load_settings(cfg)


def test_broken_or_missing_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("model = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_readme_documents_every_setting() -> None:
    from chatloop.settings import Settings

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    missing = [n for n in Settings.model_fields if f"`CHATLOOP_{n.upper()}`" not in readme]
    assert missing == [], "add these settings to the README's configuration table"


def test_operator_names_are_aliases_and_the_chatloop_names_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for alias in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "DISCORD_TOKEN"):
        monkeypatch.setenv(alias, f"from-{alias.lower()}")
    s = load_settings()
    assert s.slack_bot_token and s.slack_bot_token.get_secret_value() == "from-slack_bot_token"
    assert s.slack_signing_secret and s.slack_app_token and s.discord_token
    assert s.slack_app_token.get_secret_value() == "from-slack_app_token"
    assert s.discord_token.get_secret_value() == "from-discord_token"
    assert s.slack_enabled and s.discord_enabled
    monkeypatch.setenv("CHATLOOP_SLACK_BOT_TOKEN", "xoxb-chatloop")
    monkeypatch.setenv("CHATLOOP_DISCORD_TOKEN", "chatloop-discord")
    s = load_settings()
    assert s.slack_bot_token and s.slack_bot_token.get_secret_value() == "xoxb-chatloop"
    assert s.discord_token and s.discord_token.get_secret_value() == "chatloop-discord"
    # keyword arguments (tests, the composition root) still use the field names
    s = load_settings(slack_bot_token="xoxb-kw")
    assert s.slack_bot_token and s.slack_bot_token.get_secret_value() == "xoxb-kw"
    assert "from-" not in repr(s) and s.redacted()["slack_app_token"] == "********"


def test_aliases_of_secrets_are_refused_in_the_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "chatloop.toml"
    cfg.write_text('SLACK_BOT_TOKEN = "xoxb-leak"\n')
    with pytest.raises(SettingsError, match="CHATLOOP_SLACK_BOT_TOKEN"):
        load_settings(cfg)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CHATLOOP_SLACK_BOT_TOKEN": "xoxb-1"}, ["CHATLOOP_SLACK_SIGNING_SECRET", "APP_TOKEN"]),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, ["SLACK_BOT_TOKEN is set", "SIGNING_SECRET"]),
        ({"CHATLOOP_SLACK_SIGNING_SECRET": "s"}, ["CHATLOOP_SLACK_BOT_TOKEN"]),
        ({"SLACK_APP_TOKEN": "xapp-1"}, ["SLACK_APP_TOKEN is set", "CHATLOOP_SLACK_BOT_TOKEN"]),
        ({"CHATLOOP_SLACK_MAINTAINERS_CHANNEL": "C1"}, ["CHATLOOP_SLACK_BOT_TOKEN"]),
        ({"CHATLOOP_DISCORD_CHANNEL_IDS": "1,2"}, ["CHATLOOP_DISCORD_TOKEN"]),
        ({"CHATLOOP_DISCORD_MAINTAINERS_CHANNEL": "9"}, ["CHATLOOP_DISCORD_TOKEN"]),
    ],
)
def test_a_half_configured_platform_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: list[str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    problems = load_settings().platform_problems()
    assert len(problems) == 1
    assert all(name in problems[0] for name in named), problems[0]
    assert "xoxb-1" not in problems[0] and "xapp-1" not in problems[0]


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"},
        {"CHATLOOP_SLACK_BOT_TOKEN": "xoxb-1", "CHATLOOP_SLACK_APP_TOKEN": "xapp-1"},
        {"DISCORD_TOKEN": "t", "CHATLOOP_DISCORD_GUILD_IDS": "1"},
    ],
)
def test_complete_or_absent_platforms_have_no_problems(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().platform_problems() == []
