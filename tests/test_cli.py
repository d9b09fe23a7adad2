"""The command line: database, privacy and eval-set commands on a SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    assert code == 1 and "chatloop db upgrade" in err


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
    assert json.loads(out)["conversations"] == 1  # the DM went with its only writer
    code, _, err = invoke("privacy", "export", "--platform", "discord", "--user", "42")
    assert code == 1 and "no user" in err
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
    assert code == 1 and "CHATLOOP_TEMPERATURE" in err


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


def _voted_turn(s: Any, user: str, thread: str, question: str, answer: str, vote: int) -> None:
    from storage.repositories import FeedbackRepo, Replies

    u = Users(s).upsert("console", user)
    conv = Conversations(s).get_or_create(
        "console", "c", thread_id=thread, kind=ConversationKind.CONSOLE
    )
    msg = Messages(s).add(conversation_id=conv.id, user_id=u.id, raw_text=question)
    reply = Replies(s).add(
        message_id=msg.id, conversation_id=conv.id, text=answer, finish_reason="stop",
        adapter_version="base", model_id="m", replica_id="r", latency_ms=1, ttft_ms=1,
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    FeedbackRepo(s).vote(reply_id=reply.id, user_id=u.id, value=vote, source="command")


def test_data_snapshot_takes_the_cleaner_settings(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATLOOP_SNAPSHOT_DIR", str(tmp_path / "snaps"))
    monkeypatch.setenv("CHATLOOP_CLEAN_LANGUAGES", "de")
    monkeypatch.setenv("CHATLOOP_CLEAN_MAX_USER_SHARE", "0.5")
    monkeypatch.setenv("CHATLOOP_CLEAN_BALANCE_RATIO", "1")
    assert invoke("db", "upgrade")[0] == 0
    engine = make_engine(env)
    with transaction(session_factory(engine)) as s:
        for thread, question, answer in (
            ("1", "Wie kann ich mein Passwort ändern?", "Geh bitte zu den Einstellungen."),
            ("2", "Wo finde ich die Rechnungen für den März?", "Unter Konto und dann Rechnungen."),
            ("3", "Kann ich die Sprache der App wechseln?", "Ja, das geht im Menü Sprache."),
        ):
            _voted_turn(s, "ann", thread, question, answer, 1)
        _voted_turn(
            s, "bea", "4", "Warum ist der Export so langsam heute?", "Das weiß ich nicht.", -1
        )
        _voted_turn(s, "cid", "5", "How do I change my password?", "Go to Settings.", 1)
    engine.dispose()
    code, out, _ = invoke("data", "snapshot", "--eval-fraction", "0")
    assert code == 0, out
    counts = json.loads(out)
    # the English row goes (language); of Ann's three, one goes (at most half of the four
    # rows per user); then 👍 are cut to as many as 👎 (balance 1)
    assert counts["clean"]["dropped"] == {"language": 1, "user_cap": 1, "balance": 1}
    assert counts["train"] == 2

    monkeypatch.setenv("CHATLOOP_CLEAN_LANGUAGES", "fr")
    code, _, err = invoke("data", "snapshot")
    assert code == 1 and "CHATLOOP_CLEAN_LANGUAGES" in err


def test_privacy_retention_anonymizes_before_it_deletes(env: str) -> None:
    from datetime import timedelta

    from storage.models import utcnow

    assert invoke("db", "upgrade")[0] == 0
    engine = make_engine(env)
    with transaction(session_factory(engine)) as s:
        user = Users(s).upsert("discord", "42", display_name="Dana")
        conv = Conversations(s).get_or_create("discord", "c", kind=ConversationKind.DM)
        msg = Messages(s).add(
            conversation_id=conv.id, user_id=user.id, raw_text="my email is dana@example.org"
        )
        msg.created_at = utcnow() - timedelta(days=40)
        message_id = msg.id
    code, out, _ = invoke("privacy", "retention", "--days", "30", "--no-anonymize")
    assert code == 0 and json.loads(out)["waiting_for_anonymization"] == 1
    code, out, _ = invoke("privacy", "retention", "--days", "30")
    report = json.loads(out)
    assert code == 0 and (report["anonymized"], report["messages"]) == (1, 1)
    with transaction(session_factory(engine)) as s:
        stored = Messages(s).get(message_id)
        assert stored.raw_text is None and stored.anon_text == "my email is <EMAIL_1>"
    engine.dispose()
