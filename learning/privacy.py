"""Privacy operations: erasure, access (export) and retention.

- :func:`erase_user` removes a person's raw and anonymized text (their messages and
  the bot's replies to them), their votes and flags, the conversations left empty
  (a DM with the bot), the records of which snapshots held their data, and the user
  row itself. It marks every dataset snapshot that held their data as tainted, and
  every adapter trained on such a snapshot *or descended from one* (``parent_version``)
  as well (a tainted adapter can never be activated). A tainted adapter in service
  is taken out at once: a tainted canary loses its share, a tainted active adapter is
  rolled back to the newest untainted one that served before it (or the base model).
  Answer-memory entries they asked, wrote or last edited are deleted
  (``storage.memory.MemoryEntries.erase_user``); every replica's index drops them
  before its next retrieval.
  Audit rows the person wrote as actor (``slack:U…``) keep their action but name
  ``erased-user``; the erasure's own audit row holds counts only, never the content.
- :func:`export_user` gathers everything stored about a person (GDPR access).
- :func:`apply_retention` deletes raw text older than N days once its anonymized
  form exists. Given an anonymizer it first anonymizes the old raw text that has no
  anonymized form yet (messages, replies, flag corrections; one pseudonym map per
  conversation, chronologically, as :mod:`learning.snapshot` does), so the raw text
  really goes; without one, text that was never anonymized is kept until it is.
  Free-text reasons of votes and flags past the cutoff are cleared (they are never
  anonymized and never train).

Snapshot files on disk hold only anonymized text; tainted snapshots are not used
again and the learning loop retrains without the erased data. This module knows
nothing of platforms' APIs or of models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from learning.snapshot import (
    TextAnonymizer,
    anonymize_conversation,
    load_conversation_texts,
    participant_names,
    store_anonymized,
)
from storage.errors import NotFound
from storage.memory import MemoryEntries
from storage.models import (
    Conversation,
    EvalItem,
    Feedback,
    Flag,
    Message,
    Reply,
    User,
    utcnow,
)
from storage.repositories import Adapters, Audit, Snapshots, Users

ERASED_ACTOR = "erased-user"
"""What audit rows written by an erased person name as their actor."""


@dataclass(frozen=True, slots=True)
class ErasureReport:
    messages: int
    replies: int
    votes: int
    flags: int
    conversations: int
    tainted_snapshots: list[int]
    tainted_adapters: list[str]
    active_adapter_tainted: str | None
    """The adapter that was serving and was trained on the erased data (now retired)."""
    now_active: str | None
    """What serves instead of it: a version or "base" (None when nothing changed)."""
    canaries_stopped: list[str] = field(default_factory=list)
    audit_rows_pseudonymized: int = 0
    memory_entries: int = 0
    """Answer-memory entries the person asked, wrote or last edited (deleted)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _user(session: Session, platform: str, external_id: str) -> User:
    user = Users(session).get(platform, external_id)
    if user is None:
        raise NotFound(f"no user {external_id!r} on {platform!r} is stored")
    return user


def erase_user(session: Session, *, platform: str, external_id: str, actor: str) -> ErasureReport:
    """Erase everything stored about one person; see the module docstring."""
    user = _user(session, platform, external_id)
    uid = user.id
    message_ids = select(Message.id).where(Message.user_id == uid)
    reply_ids = select(Reply.id).where(Reply.message_id.in_(message_ids))

    def count(model: Any, *where: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    n_replies = count(Reply, Reply.message_id.in_(message_ids))
    n_messages = count(Message, Message.user_id == uid)
    n_votes = count(Feedback, Feedback.user_id == uid)
    n_flags = count(Flag, Flag.user_id == uid)
    conv_ids = sorted(
        session.scalars(select(Message.conversation_id).where(Message.user_id == uid).distinct())
    )
    # first, while their messages still exist to find the entries made from them
    n_memory = MemoryEntries(session).erase_user(uid)
    # votes and flags on the replies to this person go with those replies
    session.execute(delete(Feedback).where(Feedback.reply_id.in_(reply_ids)))
    session.execute(delete(Flag).where(Flag.reply_id.in_(reply_ids)))
    session.execute(delete(Reply).where(Reply.id.in_(reply_ids)))
    session.execute(delete(Message).where(Message.user_id == uid))
    session.execute(delete(Feedback).where(Feedback.user_id == uid))
    session.execute(delete(Flag).where(Flag.user_id == uid))
    # conversations nobody else wrote in (a DM with the bot) go too
    n_conversations = 0
    if conv_ids:
        empty = (
            delete(Conversation)
            .where(Conversation.id.in_(conv_ids))
            .where(~exists().where(Message.conversation_id == Conversation.id))
            .where(~exists().where(Reply.conversation_id == Conversation.id))
        )
        n_conversations = int(session.execute(empty).rowcount or 0)  # type: ignore[attr-defined]
    why = f"trained on data of an erased user (erasure by {actor})"
    snapshots = Snapshots(session).taint_for_user(uid, actor=actor, reason=why)
    tainted = Adapters(session).taint_trained_on(snapshots, actor=actor, reason=why)
    withdrawal = Adapters(session).withdraw_tainted(actor=actor, reason=why)
    Snapshots(session).forget_user(uid)
    session.delete(user)
    session.flush()
    report = ErasureReport(
        messages=n_messages,
        replies=n_replies,
        votes=n_votes,
        flags=n_flags,
        conversations=n_conversations,
        tainted_snapshots=snapshots,
        tainted_adapters=[a.version for a in tainted],
        active_adapter_tainted=withdrawal.retired,
        now_active=withdrawal.now_active,
        canaries_stopped=withdrawal.canaries_stopped,
        memory_entries=n_memory,
    )
    Audit(session).record(
        actor=actor,
        action="privacy.erase",
        target_type="user",
        target_id=str(uid),
        reason="erasure request",
        details={"platform": platform, **report.as_dict()},
    )
    # last, so that an erasure the person requested themselves is covered as well
    principal = f"{platform}:{external_id}"
    pseudonymized = Audit(session).pseudonymize_actor(principal, replacement=ERASED_ACTOR)
    session.execute(
        update(EvalItem).where(EvalItem.created_by == principal).values(created_by=ERASED_ACTOR)
    )
    session.flush()
    return replace(report, audit_rows_pseudonymized=pseudonymized)


def export_user(session: Session, *, platform: str, external_id: str) -> dict[str, Any]:
    """Everything stored about one person, as JSON-ready data."""
    user = _user(session, platform, external_id)
    messages = list(
        session.scalars(select(Message).where(Message.user_id == user.id).order_by(Message.id))
    )
    out_messages = []
    for m in messages:
        replies = session.scalars(select(Reply).where(Reply.message_id == m.id).order_by(Reply.id))
        out_messages.append(
            {
                "id": m.id,
                "conversation_id": m.conversation_id,
                "created_at": m.created_at.isoformat(),
                "text": m.raw_text,
                "anonymized_text": m.anon_text,
                "replies": [
                    {
                        "id": r.id,
                        "text": r.text,
                        "adapter_version": r.adapter_version,
                        "created_at": r.created_at.isoformat(),
                    }
                    for r in replies
                ],
            }
        )
    votes = session.scalars(
        select(Feedback).where(Feedback.user_id == user.id).order_by(Feedback.id)
    )
    flags = session.scalars(select(Flag).where(Flag.user_id == user.id).order_by(Flag.id))
    return {
        "user": {
            "platform": user.platform,
            "id": user.external_id,
            "display_name": user.display_name,
            "role": user.role.value,
            "created_at": user.created_at.isoformat(),
        },
        "messages": out_messages,
        "votes": [
            {
                "reply_id": v.reply_id,
                "value": v.value,
                "reason": v.reason,
                "source": v.source,
                "at": v.updated_at.isoformat(),
            }
            for v in votes
        ],
        "flags": [
            {
                "reply_id": f.reply_id,
                "reason": f.reason,
                "correction": f.corrected_text,
                "at": f.created_at.isoformat(),
            }
            for f in flags
        ],
        "exported_at": utcnow().isoformat(),
    }


@dataclass(frozen=True, slots=True)
class RetentionReport:
    messages: int
    replies: int
    flags: int
    waiting_for_anonymization: int
    anonymized: int = 0
    """Old texts anonymized now (only with an anonymizer), then dropped like the rest."""
    reasons_cleared: int = 0


def _waiting(cutoff: datetime) -> list[tuple[Any, Any]]:
    """For messages, replies and flag corrections: (conversation ids, count) of old raw
    text without an anonymized form."""
    out: list[tuple[Any, Any]] = []
    m, r, f = Message, Reply, Flag
    for model, conv, when, raw, anon in (
        (m, m.conversation_id, m.created_at, m.raw_text, m.anon_text),
        (r, r.conversation_id, r.created_at, r.text, r.anon_text),
        (f, r.conversation_id, f.created_at, f.corrected_text, f.corrected_anon_text),
    ):
        where = (when < cutoff, raw.is_not(None), anon.is_(None))
        convs = select(conv)
        if model is Flag:
            convs = convs.select_from(Flag).join(Reply, Reply.id == Flag.reply_id)
        out.append((convs.where(*where), select(func.count()).select_from(model).where(*where)))
    return out


def _count_waiting(session: Session, cutoff: datetime) -> int:
    return sum(int(session.scalar(q) or 0) for _, q in _waiting(cutoff))


def waiting_for_anonymization(session: Session, *, days: int, now: datetime | None = None) -> int:
    """How many texts past the retention period have raw text but no anonymized form."""
    return _count_waiting(session, (now or utcnow()) - timedelta(days=days))


def _anonymize_old(session: Session, anonymizer: TextAnonymizer, cutoff: datetime) -> int:
    conv_ids: set[int] = set()
    for ids, _ in _waiting(cutoff):
        conv_ids.update(session.scalars(ids.distinct()))
    if not conv_ids:
        return 0
    texts = load_conversation_texts(session, conv_ids, before=cutoff)
    names = participant_names(session, conv_ids)
    done = 0
    for conv in sorted(conv_ids):
        # the whole old part of the conversation, so the numbering matches the snapshots'
        results = anonymize_conversation(anonymizer, texts[conv], participants=names[conv])
        done += store_anonymized(session, results)
    return done


def apply_retention(
    session: Session,
    *,
    days: int,
    now: datetime | None = None,
    anonymizer: TextAnonymizer | None = None,
) -> RetentionReport:
    """Delete raw text older than ``days`` whose anonymized form exists (see the module
    docstring); with ``anonymizer``, old raw text is anonymized first."""
    if days <= 0:
        raise ValueError("retention needs a positive number of days")
    cutoff = (now or utcnow()) - timedelta(days=days)
    anonymized = _anonymize_old(session, anonymizer, cutoff) if anonymizer is not None else 0

    def clear(model: Any, values: dict[str, None], *where: Any) -> int:
        # "fetch": the session may hold these rows with naive (SQLite) datetimes, which
        # the in-Python "evaluate" strategy cannot compare with the aware cutoff
        stmt = update(model).where(*where).values(**values)
        result = session.execute(stmt.execution_options(synchronize_session="fetch"))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    m, r, f, fb = Message, Reply, Flag, Feedback
    n_messages = clear(
        m, {"raw_text": None}, m.created_at < cutoff, m.anon_text.is_not(None),
        m.raw_text.is_not(None),
    )  # fmt: skip
    n_replies = clear(
        r, {"text": None}, r.created_at < cutoff, r.anon_text.is_not(None), r.text.is_not(None)
    )
    n_flags = clear(
        f, {"corrected_text": None}, f.created_at < cutoff, f.corrected_anon_text.is_not(None),
        f.corrected_text.is_not(None),
    )  # fmt: skip
    n_reasons = clear(fb, {"reason": None}, fb.updated_at < cutoff, fb.reason.is_not(None))
    n_reasons += clear(f, {"reason": None}, f.created_at < cutoff, f.reason.is_not(None))
    waiting = _count_waiting(session, cutoff)
    return RetentionReport(
        messages=n_messages,
        replies=n_replies,
        flags=n_flags,
        waiting_for_anonymization=waiting,
        anonymized=anonymized,
        reasons_cleared=n_reasons,
    )
