"""The Slack app manifest's request URL is set in one place (bot.platforms.slack.appmanifest)."""

from __future__ import annotations

import pytest

from bot.platforms.slack import appmanifest

yaml = pytest.importorskip("yaml")


def _urls(manifest: dict) -> list[str]:  # type: ignore[type-arg]
    commands = manifest["features"]["slash_commands"]
    settings = manifest["settings"]
    return [
        *(c.get("url") for c in commands),
        settings["event_subscriptions"].get("request_url"),
        settings["interactivity"].get("request_url"),
    ]


def test_the_placeholder_stands_exactly_in_the_three_url_fields() -> None:
    text = appmanifest.MANIFEST.read_text(encoding="utf-8")
    manifest = yaml.safe_load(text)
    assert _urls(manifest) == [appmanifest.PLACEHOLDER] * 3
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert body.count(appmanifest.PLACEHOLDER) == 3  # no fourth copy to forget
    assert "chatloop.example.com" not in body.replace(appmanifest.PLACEHOLDER, "")


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://bot.example.org", "https://bot.example.org/slack/events"),
        ("https://bot.example.org/", "https://bot.example.org/slack/events"),
        ("https://x.io:8443/chat", "https://x.io:8443/chat/slack/events"),
        ("https://x.io/slack/events", "https://x.io/slack/events"),
    ],
)
def test_render_puts_one_url_in_every_field(base: str, url: str) -> None:
    manifest = yaml.safe_load(appmanifest.render(base))
    assert _urls(manifest) == [url] * 3
    assert manifest["settings"]["socket_mode_enabled"] is False


def test_socket_mode_needs_no_url() -> None:
    manifest = yaml.safe_load(appmanifest.render(socket_mode=True))
    assert _urls(manifest) == [None] * 3
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


@pytest.mark.parametrize("base", ["http://bot.example.org", "bot.example.org", "https://x?a=1"])
def test_only_a_public_https_url_is_taken(base: str) -> None:
    with pytest.raises(ValueError, match="https"):
        appmanifest.render(base)


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert appmanifest.main(["https://bot.example.org"]) == 0
    assert "https://bot.example.org/slack/events" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        appmanifest.main([])
