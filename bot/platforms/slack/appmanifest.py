"""The Slack app manifest with this deployment's request URL: one place to set it.

Slack app manifests have no variables, and the HTTP transport needs the same
request URL in three fields: the slash command's ``url``,
``settings.event_subscriptions.request_url`` and ``settings.interactivity.request_url``
(slack-bolt serves events, interactivity and commands on one path, ``/slack/events``,
see :mod:`bot.platforms.slack.server`). ``manifest.yml`` beside this module holds
:data:`PLACEHOLDER` in exactly those fields (a test keeps it so), and
:func:`render` puts the bot's public base URL into all three::

    python -m bot.platforms.slack.appmanifest https://chatloop.example.org > manifest.yml
    python -m bot.platforms.slack.appmanifest --socket-mode > manifest.yml

``--socket-mode`` renders the Socket Mode variant instead: ``socket_mode_enabled:
true`` and no request URLs at all (Slack ignores them in Socket Mode). The output is
what to paste at https://api.slack.com/apps -> *Create New App* -> *From an app
manifest*.

It reads and writes text only; it knows nothing of the adapter or the settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

MANIFEST = Path(__file__).with_name("manifest.yml")
REQUEST_PATH = "/slack/events"
PLACEHOLDER = "https://chatloop.example.com" + REQUEST_PATH
"""The request URL as ``manifest.yml`` spells it, in each of the three fields."""


def request_url(base_url: str) -> str:
    """``https://host[/prefix]`` -> the request URL Slack must call."""
    parts = urlsplit(base_url.strip())
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"the bot's public URL must be https://host[/path], not {base_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(REQUEST_PATH):
        path += REQUEST_PATH
    return f"https://{parts.netloc}{path}"


def render(base_url: str | None = None, *, socket_mode: bool = False) -> str:
    """``manifest.yml`` with ``base_url``'s request URL, or the Socket Mode variant."""
    text = MANIFEST.read_text(encoding="utf-8")
    if socket_mode:
        lines = [line for line in text.splitlines(keepends=True) if PLACEHOLDER not in line]
        text = "".join(lines).replace("socket_mode_enabled: false", "socket_mode_enabled: true")
        return text
    if base_url is None:
        raise ValueError("give the bot's public https URL, or socket_mode=True")
    return text.replace(PLACEHOLDER, request_url(base_url))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bot.platforms.slack.appmanifest",
        description="Print chatloop's Slack app manifest for this deployment.",
    )
    parser.add_argument("url", nargs="?", help="the bot's public https base URL")
    parser.add_argument("--socket-mode", action="store_true", help="Socket Mode: no request URLs")
    args = parser.parse_args(argv)
    if not args.url and not args.socket_mode:
        parser.error("give the bot's public https URL, or --socket-mode")
    try:
        sys.stdout.write(render(args.url, socket_mode=args.socket_mode))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
