"""Erasure, export and retention on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from learning.privacy import apply_retention, erase_user, export_user
from storage.db import transaction
from storage.errors import NotFound
from storage.models import (
    AdapterStatus,
    AuditEntry,
    ConversationKind,
    DatasetSnapshot,
    Message,
    Reply,
    User,
    utcnow,
)
from storage.repositories import (
    Adapters,
    Conversations,
    FeedbackRepo,
    Flags,
    InvalidTransition,
    Messages,
    Replies,
    Snapshots,
    Users,
)

SECRET = "my phone is +49 170 1234567"


def _exchange(s: Session, user_ext: str, question: str, conv_thread: str) -> tuple[int, int, int]:
    user = Users(s).upsert("slack", user_ext, display_name=f"name-{user_ext}")
    conv = Conversations(s).get_or_create(
        "slack", "C1", thread_id=conv_thread, kind=ConversationKind.THREAD
    )
    msg = Messages(s).add(conversation_id=conv.id, user_id=user.id, raw_text=question)
    reply = Replies(s).add(
        message_id=msg.id, conversation_id=conv.id, text=f"re: {question}", finish_reason="stop",
        adapter_version="base", model_id="m", replica_id="r", latency_ms=1.0, ttft_ms=None,
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    return user.id, msg.id, reply.id


@pytest.fixture
def populated(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as s:
        alice, _, alice_reply = _exchange(s, "UALICE", SECRET, "t1")
        bob, _, bob_reply = _exchange(s, "UBOB", "how do I log in?", "t2")
        staff = Users(s).upsert("slack", "USTAFF").id
        FeedbackRepo(s).vote(
            reply_id=alice_reply, user_id=alice, value=-1, source="button", reason=SECRET
        )
        FeedbackRepo(s).vote(reply_id=bob_reply, user_id=alice, value=1, source="button")
        FeedbackRepo(s).vote(reply_id=alice_reply, user_id=bob, value=1, source="button")
        Flags(s).add(
            reply_id=alice_reply, user_id=staff, reason="wrong", corrected_text="call support"
        )
        snap = Snapshots(s).add(
            content_hash="a" * 64, path="/snap/1", counts={}, since_message_id=None,
            until_message_id=2, users={alice: 1, bob: 1},
        )  # fmt: skip
        clean = Snapshots(s).add(
            content_hash="b" * 64, path="/snap/2", counts={}, since_message_id=None,
            until_message_id=2, users={bob: 1},
        )  # fmt: skip
        reg = Adapters(s)
        for version, snapshot in (("v-alice", snap.id), ("v-clean", clean.id)):
            reg.register(version=version, base_model="smol", snapshot_id=snapshot)
            reg.transition(version, AdapterStatus.CANDIDATE, actor="t")
            reg.transition(version, AdapterStatus.PENDING, actor="t")
        return {"alice": alice, "bob": bob, "snap": snap.id, "clean": clean.id}


def test_erase_removes_every_trace_and_taints(
    sessions: sessionmaker[Session], populated: dict[str, int]
) -> None:
    with transaction(sessions) as s:
        report = erase_user(s, platform="slack", external_id="UALICE", actor="cli")
    assert (report.messages, report.replies, report.votes) == (1, 1, 2)
    assert report.tainted_snapshots == [populated["snap"]]
    assert report.tainted_adapters == ["v-alice"]
    with transaction(sessions) as s:
        assert Users(s).get("slack", "UALICE") is None
        users = {u.external_id for u in s.scalars(select(User))}
        assert users == {"UBOB", "USTAFF"}
        texts = [m.raw_text for m in s.scalars(select(Message))]
        assert texts == ["how do I log in?"]
        assert [r.text for r in s.scalars(select(Reply))] == ["re: how do I log in?"]
        # no column anywhere still holds the erased text
        for table in ("messages", "replies", "feedback", "flags", "users", "audit_log"):
            for row in s.execute(text(f"SELECT * FROM {table}")):
                assert "1234567" not in json.dumps([str(v) for v in row])
                assert "UALICE" not in json.dumps([str(v) for v in row])
        audit = s.scalars(select(AuditEntry).filter_by(action="privacy.erase")).one()
        assert audit.target_id == str(populated["alice"]) and audit.details["messages"] == 1
        # the snapshot with her data and its adapter are tainted; the other is not
        tainted = s.get(DatasetSnapshot, populated["snap"])
        untouched = s.get(DatasetSnapshot, populated["clean"])
        assert tainted is not None and tainted.tainted
        assert untouched is not None and not untouched.tainted
        assert Adapters(s).get("v-alice").tainted and not Adapters(s).get("v-clean").tainted
        with pytest.raises(InvalidTransition, match="erased data"):
            Adapters(s).transition("v-alice", AdapterStatus.ACTIVE, actor="maint")
        with pytest.raises(InvalidTransition):
            Adapters(s).set_canary("v-alice", 10, actor="maint")
        Adapters(s).transition("v-clean", AdapterStatus.ACTIVE, actor="maint")
    with transaction(sessions) as s, pytest.raises(NotFound):
        erase_user(s, platform="slack", external_id="UALICE", actor="cli")


def test_export_gives_a_person_their_data(
    sessions: sessionmaker[Session], populated: dict[str, int]
) -> None:
    with transaction(sessions) as s:
        data = export_user(s, platform="slack", external_id="UALICE")
    assert data["user"]["id"] == "UALICE" and data["user"]["display_name"] == "name-UALICE"
    assert [m["text"] for m in data["messages"]] == [SECRET]
    assert data["messages"][0]["replies"][0]["text"] == f"re: {SECRET}"
    assert sorted(v["value"] for v in data["votes"]) == [-1, 1]
    json.dumps(data)  # serializable as is
    with transaction(sessions) as s, pytest.raises(NotFound):
        export_user(s, platform="discord", external_id="UALICE")


def test_retention_deletes_only_what_has_an_anonymized_form(
    sessions: sessionmaker[Session],
) -> None:
    old = utcnow() - timedelta(days=40)
    with transaction(sessions) as s:
        _, anonymized, r1 = _exchange(s, "U1", "old and anonymized", "a")
        _, raw_only, _ = _exchange(s, "U1", "old, never anonymized", "b")
        _, recent, _ = _exchange(s, "U1", "recent and anonymized", "c")
        for mid, anon, created in (
            (anonymized, "old and anonymized", old),
            (raw_only, None, old),
            (recent, "x", utcnow()),
        ):
            m = Messages(s).get(mid)
            m.anon_text, m.created_at = anon, created
        reply = Replies(s).get(r1)
        reply.anon_text, reply.created_at = "re: anon", old
    with transaction(sessions) as s:
        report = apply_retention(s, days=30)
    assert (report.messages, report.replies, report.waiting_for_anonymization) == (1, 1, 1)
    with transaction(sessions) as s:
        assert Messages(s).get(anonymized).raw_text is None
        assert Messages(s).get(anonymized).anon_text == "old and anonymized"
        assert Messages(s).get(raw_only).raw_text == "old, never anonymized"
        assert Messages(s).get(recent).raw_text == "recent and anonymized"
        assert Replies(s).get(r1).text is None and Replies(s).get(r1).anon_text == "re: anon"
    with transaction(sessions) as s, pytest.raises(ValueError, match="positive"):
        apply_retention(s, days=0)
