"""Erasure, export and retention on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from learning.privacy import apply_retention, erase_user, export_user
from storage.db import transaction
from storage.errors import NotFound
from storage.models import (
    AdapterStatus,
    AuditEntry,
    Conversation,
    ConversationKind,
    DatasetSnapshot,
    Feedback,
    Flag,
    Message,
    Reply,
    SnapshotSource,
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
        # a DM with the bot that only Alice wrote in
        dm = Conversations(s).get_or_create("slack", "DUALICE", kind=ConversationKind.DM)
        Messages(s).add(conversation_id=dm.id, user_id=alice, raw_text="hello bot")
        reg = Adapters(s)
        # v-child was trained from v-alice's weights (on clean data), v-grand from v-child
        for version, snapshot, parent in (
            ("v-alice", snap.id, None),
            ("v-clean", clean.id, None),
            ("v-child", clean.id, "v-alice"),
            ("v-grand", None, "v-child"),
        ):
            reg.register(
                version=version, base_model="smol", snapshot_id=snapshot, parent_version=parent
            )
            reg.transition(version, AdapterStatus.CANDIDATE, actor="t")
            reg.transition(version, AdapterStatus.PENDING, actor="t")
        # v-clean served, then v-child replaced it; Alice (a maintainer too) runs a canary
        reg.transition("v-clean", AdapterStatus.ACTIVE, actor="t")
        reg.transition("v-child", AdapterStatus.ACTIVE, actor="slack:UALICE", reason="ok")
        reg.set_canary("v-alice", 10, actor="slack:UALICE")
        return {"alice": alice, "bob": bob, "snap": snap.id, "clean": clean.id}


def test_erase_removes_every_trace_and_taints(
    sessions: sessionmaker[Session], populated: dict[str, int]
) -> None:
    with transaction(sessions) as s:
        report = erase_user(s, platform="slack", external_id="UALICE", actor="cli")
    assert (report.messages, report.replies, report.votes) == (2, 1, 2)
    assert report.conversations == 2  # her thread and her DM; Bob's thread stays
    assert report.tainted_snapshots == [populated["snap"]]
    assert report.tainted_adapters == ["v-alice", "v-child", "v-grand"]
    assert (report.active_adapter_tainted, report.now_active) == ("v-child", "v-clean")
    assert report.canaries_stopped == ["v-alice"]
    assert report.audit_rows_pseudonymized == 3  # her approval (2 status rows) + her canary
    with transaction(sessions) as s:
        assert Users(s).get("slack", "UALICE") is None
        users = {u.external_id for u in s.scalars(select(User))}
        assert users == {"UBOB", "USTAFF"}
        texts = [m.raw_text for m in s.scalars(select(Message))]
        assert texts == ["how do I log in?"]
        assert [r.text for r in s.scalars(select(Reply))] == ["re: how do I log in?"]
        assert [c.thread_id for c in s.scalars(select(Conversation))] == ["t2"]
        assert not s.scalars(select(SnapshotSource).filter_by(user_id=populated["alice"])).all()
        assert [r.user_id for r in s.scalars(select(SnapshotSource))] == [
            populated["bob"],
            populated["bob"],
        ]
        # no column anywhere still holds the erased text or her platform id
        for table in (
            "messages", "replies", "feedback", "flags", "users", "audit_log",
            "conversations", "snapshot_sources", "eval_items",
        ):  # fmt: skip
            for row in s.execute(text(f"SELECT * FROM {table}")):
                assert "1234567" not in json.dumps([str(v) for v in row])
                assert "UALICE" not in json.dumps([str(v) for v in row])
        audit = s.scalars(select(AuditEntry).filter_by(action="privacy.erase")).one()
        assert audit.target_id == str(populated["alice"]) and audit.details["messages"] == 2
        # what she did as an actor is still recorded, under a pseudonym
        hers = s.scalars(select(AuditEntry).filter_by(actor="erased-user")).all()
        assert {(e.action, e.target_id) for e in hers} == {
            ("adapter.status", "v-child"),
            ("adapter.status", "v-clean"),
            ("adapter.canary", "v-alice"),
        }
        # the snapshot with her data and its adapter are tainted; the other is not
        tainted = s.get(DatasetSnapshot, populated["snap"])
        untouched = s.get(DatasetSnapshot, populated["clean"])
        assert tainted is not None and tainted.tainted
        assert untouched is not None and not untouched.tainted
        reg = Adapters(s)
        # the whole descent from v-alice is tainted, v-clean is not
        assert [a.version for a in reg.list() if a.tainted] == ["v-alice", "v-child", "v-grand"]
        # the tainted adapter in service was rolled back, the tainted canary stopped
        assert reg.active() is not None and reg.active().version == "v-clean"  # type: ignore[union-attr]
        assert reg.get("v-child").status is AdapterStatus.RETIRED
        assert reg.canary() is None and reg.get("v-alice").canary_percent == 0
        rollback = s.scalars(select(AuditEntry).filter_by(action="adapter.rollback")).one()
        assert rollback.target_id == "v-child" and rollback.details == {"to": "v-clean"}
        assert rollback.actor == "cli" and "erased" in (rollback.reason or "")
        taints = s.scalars(select(AuditEntry).filter_by(action="adapter.taint")).all()
        assert sorted(e.target_id for e in taints) == ["v-alice", "v-child", "v-grand"]
        for version in ("v-alice", "v-child", "v-grand"):
            with pytest.raises(InvalidTransition, match="erased data"):
                reg.transition(version, AdapterStatus.ACTIVE, actor="maint")
        with pytest.raises(InvalidTransition):
            reg.set_canary("v-alice", 10, actor="maint")
        # a later rollback skips the tainted versions too
        assert reg.rollback(actor="maint") is None
    with transaction(sessions) as s, pytest.raises(NotFound):
        erase_user(s, platform="slack", external_id="UALICE", actor="cli")


def test_export_gives_a_person_their_data(
    sessions: sessionmaker[Session], populated: dict[str, int]
) -> None:
    with transaction(sessions) as s:
        data = export_user(s, platform="slack", external_id="UALICE")
    assert data["user"]["id"] == "UALICE" and data["user"]["display_name"] == "name-UALICE"
    assert [m["text"] for m in data["messages"]] == [SECRET, "hello bot"]
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


@pytest.fixture(scope="module")
def anonymizer() -> Any:
    from learning.anonymize import Anonymizer

    return Anonymizer()


def test_retention_anonymizes_old_raw_text_then_deletes_it(
    sessions: sessionmaker[Session], anonymizer: Any
) -> None:
    old = utcnow() - timedelta(days=40)
    with transaction(sessions) as s:
        alice, question, reply = _exchange(
            s, "UALICE", "I am Zelda Quartermaine, mail zelda.q@example.org please", "r1"
        )
        staff = Users(s).upsert("slack", "USTAFF").id
        _, recent, _ = _exchange(s, "UALICE", "recent, mail zelda.q@example.org", "r2")
        FeedbackRepo(s).vote(
            reply_id=reply, user_id=alice, value=-1, source="button", reason=SECRET
        )
        flag = Flags(s).add(
            reply_id=reply, user_id=staff, reason=f"she said: {SECRET}",
            corrected_text="Zelda Quartermaine should press Reset.",
        )  # fmt: skip
        Messages(s).get(question).created_at = old
        Replies(s).get(reply).created_at = old
        flag.created_at = old
        s.scalars(select(Feedback)).one().updated_at = old
        flag_id = flag.id
    with transaction(sessions) as s:  # without an anonymizer the old raw text waits
        report = apply_retention(s, days=30)
    assert (report.messages, report.waiting_for_anonymization) == (0, 3)
    assert report.reasons_cleared == 2  # free-text reasons never wait: they are cleared
    with transaction(sessions) as s:
        assert s.scalars(select(Feedback)).one().reason is None
        assert s.get(Flag, flag_id).reason is None  # type: ignore[union-attr]
        assert Messages(s).get(question).raw_text is not None

    with transaction(sessions) as s:
        report = apply_retention(s, days=30, anonymizer=anonymizer)
    assert (report.anonymized, report.messages, report.replies, report.flags) == (3, 1, 1, 1)
    assert report.waiting_for_anonymization == 0
    with transaction(sessions) as s:
        msg, rep, fl = Messages(s).get(question), Replies(s).get(reply), s.get(Flag, flag_id)
        assert fl is not None
        assert (msg.raw_text, rep.text, fl.corrected_text) == (None, None, None)
        assert msg.anon_text and msg.anonymized_at is not None
        for anon in (msg.anon_text, rep.anon_text, fl.corrected_anon_text):
            assert anon and "Zelda" not in anon and "zelda.q@" not in anon
        # one pseudonym map per conversation: the same person, the same placeholder
        assert msg.anon_text.startswith("I am <PERSON_1>")
        assert fl.corrected_anon_text == "<PERSON_1> should press Reset."
        # recent text is untouched
        assert Messages(s).get(recent).raw_text == "recent, mail zelda.q@example.org"
        assert Messages(s).get(recent).anon_text is None
