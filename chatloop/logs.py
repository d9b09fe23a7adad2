"""Structured logging set-up.

Log records carry ids, sizes and timings in ``extra={...}``; they never carry
message text or secrets (the core logs lengths, not content). ``text`` format is
``time level logger: message key=value ...``; ``json`` is one object per line.
Times are UTC, ISO-8601 with milliseconds (``2026-12-04T18:00:00.123Z``). Every line
written while the core handles one event carries that event's id (``event=...``,
first of the key-value pairs; ``"event"`` in JSON), read by :class:`EventIdFilter`
from :mod:`bot.core.context`, so one message's, vote's or command's lines can be
picked out of a busy log.

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
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.core.context import current_event_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

PAYLOAD_LOGGERS = (
    "discord.gateway",  # DEBUG: every gateway event in full (message content)
    "discord.http",  # DEBUG: REST request and response bodies
    "discord.webhook",  # DEBUG: interaction webhook URLs (they carry the interaction token)
)
"""Loggers never below INFO, whatever the level: their DEBUG records are the traffic."""


EVENT_FIELD = "event"
"""The record attribute (and log field) holding the id of the event being handled."""


class EventIdFilter(logging.Filter):
    """Puts the id of the event being handled (if any) on every record as ``event``."""

    def filter(self, record: logging.LogRecord) -> bool:
        event_id = current_event_id()
        if event_id is not None and not hasattr(record, EVENT_FIELD):
            setattr(record, EVENT_FIELD, event_id)
        return True


def utc_timestamp(record: logging.LogRecord) -> str:
    """``2026-12-04T18:00:00.123Z``: UTC, ISO-8601, milliseconds."""
    when = datetime.fromtimestamp(record.created, tz=UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    if EVENT_FIELD in fields:  # first, so the eye (and grep) finds it in one place
        fields = {EVENT_FIELD: fields.pop(EVENT_FIELD), **fields}
    return fields


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{utc_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        text = f"{base} {fields}" if fields else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": utc_timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """One handler on the root logger (stderr unless ``stream``), our format and event ids."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(EventIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party chatter: keep it to warnings unless debugging
    third_party = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for noisy in ("httpx", "urllib3", "alembic", "discord", "slack_bolt", "slack_sdk", "asyncio"):
        logging.getLogger(noisy).setLevel(third_party)
    for wire in PAYLOAD_LOGGERS:
        logging.getLogger(wire).setLevel(max(third_party, logging.INFO))
