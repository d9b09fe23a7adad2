"""The terminal adapter and the real ``chatloop`` command, on a tiny in-process model."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, RolePolicy
from bot.platforms.console import ConsoleAdapter
from serving.naive import NaiveEngine
from serving.types import GenerationParams
from storage.models import Feedback, Flag, Message, Reply
from tests.bot.fakes import ScriptedGenerator
from tests.conftest import run


class Pipe(io.TextIOWrapper):
    """stdin as a pipe (not a TTY) carrying raw bytes."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", errors="strict")

    def isatty(self) -> bool:
        return False


def _console(core: Core, data: bytes, user: str = "alice") -> tuple[ConsoleAdapter, io.StringIO]:
    out = io.StringIO()
    return ConsoleAdapter(core=core, user_id=user, stdin=Pipe(data), stdout=out), out


def _core(sessions: sessionmaker[Session], generator: Any, maintainer: bool = False) -> Core:
    return Core(
        generator=generator,
        sessions=sessions,
        roles=RolePolicy(maintainers=["console:alice"] if maintainer else []),
        config=CoreConfig(
            system_prompt="Be brief.",
            params=GenerationParams(max_new_tokens=8, max_context_tokens=512),
        ),
    )


def test_scripted_session_records_message_reply_and_vote(sessions: sessionmaker[Session]) -> None:
    core = _core(sessions, ScriptedGenerator())
    adapter, out = _console(core, b"How do I reset my password?\n/up\n")
    run(adapter.run())
    text = out.getvalue()
    assert "bot> answer: How do I reset my password?" in text
    assert "Thanks for the feedback" in text
    with sessions() as s:
        (msg,) = s.scalars(select(Message)).all()
        (reply,) = s.scalars(select(Reply)).all()
        (vote,) = s.scalars(select(Feedback)).all()
        assert msg.raw_text == "How do I reset my password?"
        assert reply.adapter_version == "base" and reply.message_id == msg.id
        assert (vote.reply_id, vote.value, vote.source) == (reply.id, 1, "command")


def test_bad_lines_never_stop_the_session(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core = _core(sessions, gen)
    data = (
        b"/up\n/bogus arg\n\xff\xfe broken \x00 bytes\n"
        + b"y" * 100_000
        + b"\n/flag better\n/down too vague\nlast question\n"
    )
    adapter, out = _console(core, data)
    run(adapter.run())
    text = out.getvalue()
    assert "ask me something first" in text  # /up before any answer
    assert "Unknown command /bogus" in text
    assert "100,000 characters" in text
    assert "Only support staff" in text
    assert "answer: last question" in text
    assert [r.messages[-1].content for r in gen.requests] == [
        "\ufffd\ufffd broken  bytes",
        "last question",
    ]
    with sessions() as s:
        assert len(s.scalars(select(Message)).all()) == 3  # incl. the oversized one
        assert len(s.scalars(select(Feedback)).all()) == 1
        assert s.scalars(select(Flag)).all() == []


def test_staff_flag_from_the_terminal(sessions: sessionmaker[Session]) -> None:
    core = _core(sessions, ScriptedGenerator(), maintainer=True)
    adapter, out = _console(
        core, b"q\n/flag Settings > Security > Reset.\n/status\n/quit\nnever read\n"
    )
    run(adapter.run())
    assert "Flagged" in out.getvalue() and "serving: base" in out.getvalue()
    with sessions() as s:
        (flag,) = s.scalars(select(Flag)).all()
        assert flag.corrected_text == "Settings > Security > Reset."
        assert len(s.scalars(select(Message)).all()) == 1


def test_console_streams_through_the_naive_engine(
    sessions: sessionmaker[Session], tiny_loaded: Any
) -> None:
    async def go() -> str:
        engine = NaiveEngine(loaded=tiny_loaded, replica_id="r-tiny")
        try:
            adapter, out = _console(_core(sessions, engine), b"hello there\n/down\n")
            await adapter.run()
            return out.getvalue()
        finally:
            await engine.aclose()

    text = run(go())
    assert "bot> " in text and "Thanks, noted" in text
    with sessions() as s:
        (reply,) = s.scalars(select(Reply)).all()
        assert reply.replica_id == "r-tiny" and reply.adapter_version == "base"
        assert 0 < reply.completion_tokens <= 8 and reply.prompt_tokens > 0
        assert reply.generation["max_new_tokens"] == 8


def test_chatloop_cli_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`chatloop db upgrade`, then the question and `/up` piped into `chatloop chat`."""
    db = tmp_path / "cli.db"
    env = {
        **os.environ,
        "CHATLOOP_DATABASE_URL": f"sqlite:///{db}",
        "CHATLOOP_MODEL": str(tiny_model_dir),
        "CHATLOOP_MAX_NEW_TOKENS": "6",
        "CHATLOOP_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "CHATLOOP_CONSOLE_USER": "tester",
    }
    exe = [sys.executable, "-m", "chatloop.cli"]
    up = subprocess.run(
        [*exe, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert up.returncode == 0, up.stderr
    chat = subprocess.run(
        [*exe, "chat"],
        input="How do I reset my password?\n/up\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert chat.returncode == 0, chat.stderr
    assert "bot> " in chat.stdout and "Thanks for the feedback" in chat.stdout
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        messages = conn.exec_driver_sql("select raw_text from messages").all()
        replies = conn.exec_driver_sql(
            "select adapter_version, latency_ms, prompt_tokens, completion_tokens from replies"
        ).all()
        votes = conn.exec_driver_sql("select value from feedback").all()
    engine.dispose()
    assert messages == [("How do I reset my password?",)]
    assert len(replies) == 1 and replies[0][0] == "base" and replies[0][1] > 0
    assert replies[0][2] > 0 and 0 < replies[0][3] <= 6
    assert votes == [(1,)]


def test_cli_chat_creates_a_new_sqlite_schema_and_refuses_an_unknown_one(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    db = tmp_path / "new.db"
    env = {
        **os.environ,
        "CHATLOOP_DATABASE_URL": f"sqlite:///{db}",
        "CHATLOOP_MODEL": str(tiny_model_dir),
        "CHATLOOP_MAX_NEW_TOKENS": "4",
        "CHATLOOP_MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }

    def chat() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatloop.cli", "chat"],
            input="hi\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    res = chat()
    assert res.returncode == 0, res.stderr
    assert "creating the schema" in res.stderr and "bot> " in res.stdout
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("update alembic_version set version_num = 'f00d'")
    engine.dispose()
    res = chat()
    assert res.returncode == 1
    assert "f00d, unknown to this code" in res.stderr and "Traceback" not in res.stderr
