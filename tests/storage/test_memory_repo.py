"""The answer-memory repository on SQLite and PostgreSQL: provenance, supersession,
edits with an audit trail (no text in it), retirement, erasure and the watermark."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.errors import NotFound
from storage.memory import TARGET, MemoryEntries, question_key
from storage.models import (
    AuditEntry,
    ConversationKind,
    MemoryEntry,
    MemorySource,
    MemoryStatus,
    Role,
    User,
)
from storage.repositories import Conversations, Flags, Messages, Replies, Users, Workspaces


def _chat(s: Session) -> dict[str, int]:
    """A customer's question, the bot's reply and a staff flag, in workspace T1."""
    ws = Workspaces(s).get_or_create("slack", "T1").id
    ann = Users(s).upsert("slack", "UANN").id
    staff = Users(s).upsert("slack", "USTAFF", role=Role.STAFF).id
    conv = (
        Conversations(s)
        .get_or_create(
            "slack", "C1", thread_id="1.1", kind=ConversationKind.THREAD, workspace_id=ws
        )
        .id
    )
    msg = Messages(s).add(conversation_id=conv, user_id=ann, raw_text="Do you ship to Norway?").id
    reply = (
        Replies(s)
        .add(
            message_id=msg,
            conversation_id=conv,
            text="No idea.",
            finish_reason="stop",
            adapter_version="base",
            model_id="m",
            replica_id="r",
            latency_ms=1.0,
            ttft_ms=1.0,
            prompt_tokens=1,
            completion_tokens=1,
            generation={},
        )
        .id
    )
    flag = Flags(s).add(reply_id=reply, user_id=staff, reason=None, corrected_text="Yes, UPS.").id
    return {
        "ws": ws,
        "ann": ann,
        "staff": staff,
        "conv": conv,
        "msg": msg,
        "reply": reply,
        "flag": flag,
    }


def _correction(s: Session, ids: dict[str, int], answer: str = "Yes, with UPS.") -> MemoryEntry:
    return MemoryEntries(s).add(
        workspace_id=ids["ws"],
        question="Do you ship to Norway?",
        answer=answer,
        source=MemorySource.CORRECTION,
        actor="slack:USTAFF",
        created_by_user_id=ids["staff"],
        asker_user_id=ids["ann"],
        conversation_id=ids["conv"],
        message_id=ids["msg"],
        reply_id=ids["reply"],
        flag_id=ids["flag"],
        embedding=b"\x00" * 16,
        embedding_model="m1",
    )


def test_add_keeps_provenance_and_supersedes_the_same_question(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        ids = _chat(s)
        first = _correction(s, ids).id
        second = _correction(s, ids, answer="Yes, with UPS or DHL.").id
        # the same question in another scope is a different entry
        other = MemoryEntries(s).add(
            workspace_id=None,
            question="do you  SHIP to norway?",
            answer="Yes.",
            source=MemorySource.CURATED,
            actor="cli:ops",
        )
        assert other.question_hash == question_key("Do you ship to Norway?")
    with sessions() as s:
        a, b = s.get(MemoryEntry, first), s.get(MemoryEntry, second)
        assert a is not None and b is not None
        assert (a.status, b.status) == (MemoryStatus.RETIRED, MemoryStatus.ACTIVE)
        assert (b.asker_user_id, b.created_by_user_id, b.reply_id, b.flag_id) == (
            ids["ann"],
            ids["staff"],
            ids["reply"],
            ids["flag"],
        )
        assert b.created_by == b.updated_by == "slack:USTAFF" and b.revision == 1
        assert [e.id for e in MemoryEntries(s).list(workspace_ids=[ids["ws"]])] == [second]
        assert {e.id for e in MemoryEntries(s).list()} == {second, other.id}
        history = MemoryEntries(s).history(first)
        assert [(h.action, h.reason) for h in history] == [
            ("memory.add", None),
            ("memory.retire", f"superseded by #{second}"),
        ]


def test_edit_retire_and_the_audit_trail_holds_no_text(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        ids = _chat(s)
        entry_id = _correction(s, ids).id
        before = MemoryEntries(s).watermark()
    with transaction(sessions) as s:
        row = MemoryEntries(s).edit(
            entry_id, actor="slack:UMAINT", answer="Yes, with UPS, 4-6 days.", user_id=None
        )
        assert row.revision == 2 and row.embedding is None and row.embedding_model is None
        with pytest.raises(ValueError, match="nothing to change"):
            MemoryEntries(s).edit(entry_id, actor="x", answer="Yes, with UPS, 4-6 days.")
    with transaction(sessions) as s:
        after_edit = MemoryEntries(s).watermark()
        assert after_edit != before and after_edit.count == before.count
        MemoryEntries(s).retire(entry_id, actor="slack:UMAINT", reason="outdated")
        with pytest.raises(ValueError, match="already retired"):
            MemoryEntries(s).retire(entry_id, actor="x")
        MemoryEntries(s).reactivate(entry_id, actor="slack:UMAINT")
        with pytest.raises(NotFound):
            MemoryEntries(s).retire(999, actor="x")
    with sessions() as s:
        rows = list(
            s.scalars(select(AuditEntry).filter_by(target_type=TARGET, target_id=str(entry_id)))
        )
        assert [r.action for r in rows] == [
            "memory.add",
            "memory.edit",
            "memory.retire",
            "memory.reactivate",
        ]
        assert all("UPS" not in str(r.details) and "Norway" not in str(r.details) for r in rows)
        assert rows[1].details["answer_chars"] == len("Yes, with UPS, 4-6 days.")


def test_erasing_the_asker_or_the_author_removes_the_entry(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        ids = _chat(s)
        by_ann = _correction(s, ids).id
        curated = (
            MemoryEntries(s)
            .add(
                workspace_id=ids["ws"],
                question="What are your hours?",
                answer="9 to 5.",
                source=MemorySource.CURATED,
                actor="slack:USTAFF",
                created_by_user_id=ids["staff"],
            )
            .id
        )
        unrelated = (
            MemoryEntries(s)
            .add(
                workspace_id=ids["ws"],
                question="Where are you?",
                answer="Oslo.",
                source=MemorySource.CURATED,
                actor="cli:ops",
            )
            .id
        )
    with transaction(sessions) as s:
        assert MemoryEntries(s).erase_user(ids["ann"]) == 1
        assert MemoryEntries(s).erase_user(ids["ann"]) == 0
    with transaction(sessions) as s:
        assert s.get(MemoryEntry, by_ann) is None
        # deleting the staff user row cascades to what they wrote, even without the call
        staff = s.get(User, ids["staff"])
        assert staff is not None
        s.delete(staff)
    with sessions() as s:
        assert s.get(MemoryEntry, curated) is None
        assert [e.id for e in MemoryEntries(s).active()] == [unrelated]
