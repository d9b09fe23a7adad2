"""The command line: database, privacy and eval-set commands on a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatloop.cli import app
from storage.db import make_engine, session_factory, transaction
from storage.models import ConversationKind
from storage.repositories import Conversations, Messages, Users


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    import os

    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return url


def invoke(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_db_commands(env: str) -> None:
    code, out, _ = invoke("db", "current")
    assert code == 0 and "current: empty" in out
    code, out, _ = invoke("db", "upgrade")
    assert code == 0 and "database at revision" in out
    code, out, _ = invoke("db", "downgrade", "base")
    assert code == 0
    code, out, _ = invoke("db", "current")
    assert "current: empty" in out


def test_commands_on_an_unmigrated_database_fail_clearly(env: str) -> None:
    code, _, err = invoke("evalset", "list")
    assert code == 2 and "chatloop db upgrade" in err


def test_privacy_commands(env: str) -> None:
    assert invoke("db", "upgrade")[0] == 0
    engine = make_engine(env)
    with transaction(session_factory(engine)) as s:
        user = Users(s).upsert("discord", "42", display_name="Dana")
        conv = Conversations(s).get_or_create("discord", "c", kind=ConversationKind.DM)
        Messages(s).add(
            conversation_id=conv.id, user_id=user.id, raw_text="my email is dana@example.org"
        )
    engine.dispose()
    code, out, _ = invoke("privacy", "export", "--platform", "discord", "--user", "42")
    assert code == 0 and json.loads(out)["messages"][0]["text"] == "my email is dana@example.org"
    code, _, _ = invoke("privacy", "erase", "--platform", "discord", "--user", "42", input="n\n")
    assert code == 1  # declined
    code, out, _ = invoke("privacy", "erase", "--platform", "discord", "--user", "42", "--yes")
    assert code == 0 and json.loads(out)["messages"] == 1
    code, _, err = invoke("privacy", "export", "--platform", "discord", "--user", "42")
    assert code == 2 and "no user" in err
    code, out, _ = invoke("privacy", "retention", "--days", "30")
    assert code == 0 and json.loads(out)["messages"] == 0


def test_evalset_commands(env: str, tmp_path: Path) -> None:
    assert invoke("db", "upgrade")[0] == 0
    code, out, _ = invoke(
        "evalset", "add", "-q", "How do I reset my password?", "-a", "Settings.", "-t", "account"
    )
    assert code == 0 and "added eval item" in out
    src = tmp_path / "eval.jsonl"
    src.write_text(json.dumps({"question": "q2", "answer": "a2"}) + "\nbroken\n")
    code, out, err = invoke("evalset", "import", str(src))
    assert code == 1 and "added 1" in out and "line 2" in err
    code, out, _ = invoke("evalset", "list", "--tag", "account")
    assert [json.loads(line)["question"] for line in out.splitlines()] == [
        "How do I reset my password?"
    ]


def test_config_masks_secrets(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_DISCORD_TOKEN", "super-secret-token")
    code, out, _ = invoke("config")
    assert (
        code == 0
        and "super-secret-token" not in out
        and json.loads(out)["discord_token"] == "********"
    )
    monkeypatch.setenv("CHATLOOP_TEMPERATURE", "-3")
    code, _, err = invoke("config")
    assert code == 2 and "CHATLOOP_TEMPERATURE" in err


def test_anonymize_and_data_commands(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLOOP_SNAPSHOT_DIR", str(tmp_path / "snaps"))
    lines = [
        json.dumps({"text": "mail me at jo.doe@example.com", "conversation": "c1"}),
        "{broken",
        json.dumps({"text": "call +49 30 1234567 please"}),
    ]
    code, out, _ = invoke("anonymize", input="\n".join(lines) + "\n")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["text"] == "mail me at <EMAIL_1>"
    assert rows[0]["entities"] == [{"type": "EMAIL", "start": 11, "end": 29}]
    assert "error" in rows[1] and "jo.doe" not in out and "1234567" not in out

    assert invoke("db", "upgrade")[0] == 0
    code, out, _ = invoke("data", "snapshot")
    assert code == 0 and "nothing written" in out
    engine = make_engine(env)
    with transaction(session_factory(engine)) as s:
        from storage.repositories import FeedbackRepo, Replies

        user = Users(s).upsert("console", "ann")
        conv = Conversations(s).get_or_create("console", "t", kind=ConversationKind.CONSOLE)
        msg = Messages(s).add(
            conversation_id=conv.id, user_id=user.id, raw_text="How do I reset my password?"
        )
        reply = Replies(s).add(
            message_id=msg.id,
            conversation_id=conv.id,
            text="Settings > Security > Reset.",
            finish_reason="stop",
            adapter_version="base",
            model_id="m",
            replica_id="r",
            latency_ms=1,
            ttft_ms=1,
            prompt_tokens=1,
            completion_tokens=1,
        )
        FeedbackRepo(s).vote(reply_id=reply.id, user_id=user.id, value=1, source="command")
    engine.dispose()
    code, out, _ = invoke("data", "snapshot", "--eval-fraction", "0")
    assert code == 0 and json.loads(out)["train"] == 1
    png = tmp_path / "r.png"
    code, out, _ = invoke("data", "report", "--png", str(png))
    assert code == 0 and "funnel" in out and png.exists()
