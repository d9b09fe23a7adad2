"""Structured logging set-up.

Log records carry ids, sizes and timings in ``extra={...}``; they never carry
message text or secrets (the core logs lengths, not content). ``text`` format is
``time level logger message key=value ...``; ``json`` is one object per line.

``--verbose`` (DEBUG) opens up third-party loggers too, except those whose DEBUG
output is the traffic itself: discord.py's gateway payloads, REST bodies and
interaction webhook URLs (``PAYLOAD_LOGGERS``) never go below INFO. The Discord
adapter pins the same loggers itself, and the Slack adapter hands slack-sdk and
slack-bolt a logger pinned at INFO (``bot.platforms.slack.wire``), so this holds
however logging was set up.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

PAYLOAD_LOGGERS = (
    "discord.gateway",  # DEBUG: every gateway event in full (message content)
    "discord.http",  # DEBUG: REST request and response bodies
    "discord.webhook",  # DEBUG: interaction webhook URLs (they carry the interaction token)
)
"""Loggers never below INFO, whatever the level: their DEBUG records are the traffic."""


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = (
            f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} "
            f"{record.name}: {record.getMessage()}"
        )
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        text = f"{base} {fields}" if fields else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter: keep it to warnings unless debugging
    third_party = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for noisy in ("httpx", "urllib3", "alembic", "discord", "slack_bolt", "slack_sdk", "asyncio"):
        logging.getLogger(noisy).setLevel(third_party)
    for wire in PAYLOAD_LOGGERS:
        logging.getLogger(wire).setLevel(max(third_party, logging.INFO))
