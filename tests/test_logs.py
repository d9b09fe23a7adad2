"""Log lines: UTC ISO-8601 times with milliseconds, and one id per handled event."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, MessageEvent, Person, Place, RolePolicy
from bot.core.context import current_event_id, event_scope
from chatloop.logs import JsonFormatter, KeyValueFormatter, setup_logging
from storage.db import make_engine, session_factory, upgrade
from tests.bot.fakes import RecordingSink, ScriptedGenerator
from tests.conftest import run

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PLACE = Place(platform="slack", channel_id="C1", thread_id="", kind="channel", workspace_id="T1")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Our logging set-up writing to a buffer; the root logger is put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    setup_logging("INFO", "text", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def _record(created: float, msg: str = "hello", **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "t", "levelname": "INFO", "msg": msg, **extra})
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def test_times_are_utc_iso8601_with_milliseconds() -> None:
    created = datetime(2026, 12, 4, 18, 0, 0, 123500, tzinfo=UTC).timestamp()
    text = KeyValueFormatter().format(_record(created))
    assert text.startswith("2026-12-04T18:00:00.123Z INFO    t: hello")
    data = json.loads(JsonFormatter().format(_record(created, chars=5)))
    assert data["ts"] == "2026-12-04T18:00:00.123Z" and data["chars"] == 5


class LoggingSink(RecordingSink):
    """A platform's reply sink that logs, as the Slack and Discord sinks do."""

    async def delta(self, text: str) -> None:
        logging.getLogger("tests.sink").info("delta posted", extra={"chars": len(text)})
        await asyncio.sleep(0)  # let the other event's handling interleave
        await super().delta(text)


def _core(sessions: sessionmaker[Session]) -> Core:
    return Core(
        generator=ScriptedGenerator(),
        sessions=sessions,
        roles=RolePolicy(staff=[], maintainers=[]),
        config=CoreConfig(system_prompt="Be brief."),
    )


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_every_line_of_one_event_carries_its_id(tmp_path: Path, log_stream: io.StringIO) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    upgrade(url)
    engine = make_engine(url)
    core = _core(session_factory(engine))
    logging.getLogger("tests").info("before any event")

    async def two_at_once() -> None:
        await asyncio.gather(
            *(
                core.on_message(
                    MessageEvent(
                        place=PLACE, author=Person(user_id=f"U{n}"), text=f"q{n}", event_id=f"m{n}"
                    ),
                    LoggingSink(),
                )
                for n in (1, 2)
            )
        )
        logging.getLogger("tests").info("after the events")

    run(two_at_once())
    engine.dispose()
    lines = _lines(log_stream)
    assert all(TS.match(line.split(" ", 1)[0]) for line in lines), lines
    outside = [line for line in lines if "before any event" in line or "after the events" in line]
    assert len(outside) == 2 and not any(" event=" in line for line in outside)
    ids: dict[str, set[str]] = {}
    for line in lines:
        found = re.search(r"event_id=(m\d)", line)
        if found:  # the core's own line about this message names the platform's event id
            ids.setdefault(found.group(1), set()).update(re.findall(r" event=(\w+)", line))
    assert set(ids) == {"m1", "m2"}
    assert all(len(v) == 1 for v in ids.values()) and ids["m1"] != ids["m2"], ids
    sink_lines = [line for line in lines if "delta posted" in line]
    assert len(sink_lines) == 4  # two deltas per answer, each logged inside its event
    sink_ids = {re.search(r" event=(\w+)", line).group(1) for line in sink_lines}  # type: ignore[union-attr]
    assert sink_ids == ids["m1"] | ids["m2"]


def test_an_event_id_is_the_first_field_of_json_lines_too() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    setup_logging("INFO", "json", stream=stream)
    try:
        with event_scope("abc123") as outer, event_scope() as inner:
            assert outer == inner == current_event_id() == "abc123"  # one event, one id
            logging.getLogger("tests").info("inside", extra={"chars": 3})
        assert current_event_id() is None
        logging.getLogger("tests").info("outside")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    inside, outside = (json.loads(line) for line in _lines(stream))
    assert list(inside)[4:] == ["event", "chars"] and inside["event"] == "abc123"
    assert "event" not in outside and TS.match(outside["ts"])
