"""The answer memory's repository: approved question/answer entries per workspace.

:class:`MemoryEntries` wraps one session (it never commits; the caller owns the
transaction, as with every repository in :mod:`storage.repositories`). It adds,
edits, retires and erases entries, writes an ``audit_log`` row for every change
(``target_type="memory_entry"``; the audit details name the fields changed and
their lengths, never the text, so erasing an entry leaves no copy of it behind),
and reads what an index needs: the active rows of every workspace with their
stored embeddings, and a cheap watermark that changes whenever any entry does.

It knows nothing of embedding models or of how entries reach a prompt: embeddings
are opaque bytes here (``serving.memory`` packs and unpacks them).
"""

from __future__ import annotations

import builtins
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import (
    AuditEntry,
    MemoryEntry,
    MemorySource,
    MemoryStatus,
    Message,
    utcnow,
)

TARGET = "memory_entry"
"""``audit_log.target_type`` of answer-memory changes."""


def question_key(question: str) -> str:
    """sha256 of the question, case-folded with whitespace collapsed (finds duplicates)."""
    norm = " ".join(unicodedata.normalize("NFKC", question).casefold().split())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Watermark:
    """Changes whenever an entry is added, edited, retired or deleted."""

    count: int
    max_id: int
    max_updated_at: datetime | None


class MemoryEntries:
    """Add, edit, retire, erase and list answer-memory entries (audited)."""

    def __init__(self, session: Session) -> None:
        self.s = session

    # writes -----------------------------------------------------------------------
    def add(
        self,
        *,
        workspace_id: int | None,
        question: str,
        answer: str,
        source: MemorySource,
        actor: str,
        created_by_user_id: int | None = None,
        asker_user_id: int | None = None,
        conversation_id: int | None = None,
        message_id: int | None = None,
        reply_id: int | None = None,
        flag_id: int | None = None,
        embedding: bytes | None = None,
        embedding_model: str | None = None,
        supersede: bool = True,
    ) -> MemoryEntry:
        """Store a new active entry; with ``supersede`` older active entries of the same
        question in the same workspace are retired (the newest correction wins)."""
        question, answer = question.strip(), answer.strip()
        if not question or not answer:
            raise ValueError("an answer-memory entry needs a question and an answer")
        key = question_key(question)
        superseded: list[MemoryEntry] = []
        if supersede:
            superseded = list(
                self.s.scalars(
                    select(MemoryEntry).where(
                        MemoryEntry.question_hash == key,
                        _same_workspace(workspace_id),
                        MemoryEntry.status == MemoryStatus.ACTIVE,
                    )
                )
            )
        now = utcnow()
        row = MemoryEntry(
            workspace_id=workspace_id,
            question=question,
            answer=answer,
            question_hash=key,
            source=source,
            status=MemoryStatus.ACTIVE,
            created_by=actor,
            created_by_user_id=created_by_user_id,
            asker_user_id=asker_user_id,
            conversation_id=conversation_id,
            message_id=message_id,
            reply_id=reply_id,
            flag_id=flag_id,
            embedding=embedding,
            embedding_model=embedding_model if embedding is not None else None,
            revision=1,
            created_at=now,
            updated_at=now,
            updated_by=actor,
            updated_by_user_id=created_by_user_id,
        )
        self.s.add(row)
        self.s.flush()
        self._audit(
            row,
            actor=actor,
            action="memory.add",
            details={
                "source": source.value,
                "question_chars": len(question),
                "answer_chars": len(answer),
            },
        )
        for old in superseded:
            self._set_status(
                old, MemoryStatus.RETIRED, actor=actor, reason=f"superseded by #{row.id}"
            )
        return row

    def edit(
        self,
        entry_id: int,
        *,
        actor: str,
        question: str | None = None,
        answer: str | None = None,
        user_id: int | None = None,
        embedding: bytes | None = None,
        embedding_model: str | None = None,
        reason: str | None = None,
    ) -> MemoryEntry:
        """Change the question and/or answer. The stored embedding is replaced by
        ``embedding`` (None: the index embeds the entry when it next loads); the old
        one no longer fits the changed text."""
        row = self.get(entry_id)
        changed: dict[str, Any] = {}
        if question is not None and question.strip() and question.strip() != row.question:
            row.question = question.strip()
            row.question_hash = question_key(row.question)
            changed["question_chars"] = len(row.question)
        if answer is not None and answer.strip() and answer.strip() != row.answer:
            row.answer = answer.strip()
            changed["answer_chars"] = len(row.answer)
        if not changed:
            raise ValueError(f"entry #{entry_id}: nothing to change")
        row.embedding = embedding
        row.embedding_model = embedding_model if embedding is not None else None
        row.revision += 1
        row.updated_at = utcnow()
        row.updated_by = actor
        row.updated_by_user_id = user_id
        self.s.flush()
        self._audit(
            row,
            actor=actor,
            action="memory.edit",
            reason=reason,
            details={"revision": row.revision, **changed},
        )
        return row

    def retire(self, entry_id: int, *, actor: str, reason: str | None = None) -> MemoryEntry:
        row = self.get(entry_id)
        if row.status is MemoryStatus.RETIRED:
            raise ValueError(f"entry #{entry_id} is already retired")
        self._set_status(row, MemoryStatus.RETIRED, actor=actor, reason=reason)
        return row

    def reactivate(self, entry_id: int, *, actor: str, reason: str | None = None) -> MemoryEntry:
        row = self.get(entry_id)
        if row.status is MemoryStatus.ACTIVE:
            raise ValueError(f"entry #{entry_id} is already active")
        self._set_status(row, MemoryStatus.ACTIVE, actor=actor, reason=reason)
        return row

    def set_embedding(self, entry_id: int, embedding: bytes, embedding_model: str) -> None:
        """Store a (re)computed embedding; not an edit (no audit, watermark unchanged)."""
        row = self.s.get(MemoryEntry, entry_id)
        if row is not None:
            row.embedding, row.embedding_model = embedding, embedding_model

    def erase_user(self, user_id: int) -> int:
        """Delete every entry that holds this person's data: entries they asked (by the
        link or by their stored message), wrote or last edited. Returns how many."""
        their_messages = select(Message.id).where(Message.user_id == user_id)
        where = or_(
            MemoryEntry.asker_user_id == user_id,
            MemoryEntry.created_by_user_id == user_id,
            MemoryEntry.updated_by_user_id == user_id,
            MemoryEntry.message_id.in_(their_messages),
        )
        ids = [str(i) for i in self.s.scalars(select(MemoryEntry.id).where(where))]
        if not ids:
            return 0
        self.s.execute(delete(MemoryEntry).where(MemoryEntry.id.in_([int(i) for i in ids])))
        # the audit rows about these entries carry no text, only who and when
        return len(ids)

    # reads ------------------------------------------------------------------------
    def get(self, entry_id: int) -> MemoryEntry:
        row = self.s.get(MemoryEntry, entry_id)
        if row is None:
            raise NotFound(f"no answer-memory entry #{entry_id}")
        return row

    def list(
        self,
        *,
        workspace_ids: Sequence[int | None] | None = None,
        statuses: Sequence[MemoryStatus] = (MemoryStatus.ACTIVE,),
        limit: int | None = None,
        offset: int = 0,
    ) -> list[MemoryEntry]:
        """Entries newest first; ``workspace_ids=None`` means every workspace."""
        q = select(MemoryEntry).where(MemoryEntry.status.in_(list(statuses)))
        if workspace_ids is not None:
            q = q.where(or_(*[_same_workspace(w) for w in workspace_ids]))
        q = q.order_by(MemoryEntry.id.desc()).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        return list(self.s.scalars(q))

    def active(self) -> builtins.list[MemoryEntry]:
        """Every active entry of every workspace, oldest first (what an index loads)."""
        return list(
            self.s.scalars(
                select(MemoryEntry)
                .where(MemoryEntry.status == MemoryStatus.ACTIVE)
                .order_by(MemoryEntry.id)
            )
        )

    def watermark(self) -> Watermark:
        """One cheap aggregate query; a replica compares it before each retrieval."""
        count, max_id, max_updated = self.s.execute(
            select(
                func.count(MemoryEntry.id),
                func.max(MemoryEntry.id),
                func.max(MemoryEntry.updated_at),
            )
        ).one()
        return Watermark(int(count or 0), int(max_id or 0), max_updated)

    def history(self, entry_id: int) -> builtins.list[AuditEntry]:
        """The entry's audit trail, oldest first (who added, edited, retired it)."""
        return list(
            self.s.scalars(
                select(AuditEntry)
                .filter_by(target_type=TARGET, target_id=str(entry_id))
                .order_by(AuditEntry.id)
            )
        )

    # helpers ----------------------------------------------------------------------
    def _set_status(
        self, row: MemoryEntry, status: MemoryStatus, *, actor: str, reason: str | None
    ) -> None:
        before = row.status
        row.status = status
        row.updated_at = utcnow()
        row.updated_by = actor
        self.s.flush()
        self._audit(
            row,
            actor=actor,
            action="memory.retire" if status is MemoryStatus.RETIRED else "memory.reactivate",
            reason=reason,
            details={"from": before.value, "to": status.value},
        )

    def _audit(
        self,
        row: MemoryEntry,
        *,
        actor: str,
        action: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.s.add(
            AuditEntry(
                actor=actor,
                action=action,
                target_type=TARGET,
                target_id=str(row.id),
                reason=reason,
                details={"workspace_id": row.workspace_id, **(details or {})},
            )
        )
        self.s.flush()


def _same_workspace(workspace_id: int | None) -> Any:
    if workspace_id is None:
        return MemoryEntry.workspace_id.is_(None)
    return MemoryEntry.workspace_id == workspace_id
