"""Privacy operations: erasure, access (export) and retention.

- :func:`erase_user` removes a person's raw and anonymized text (their messages and
  the bot's replies to them), their votes and flags, and the user row itself; it
  marks every dataset snapshot that held their data, and every adapter trained on
  such a snapshot, as tainted (a tainted adapter can never be activated), and
  writes an audit row with counts only, never the erased content.
- :func:`export_user` gathers everything stored about a person (GDPR access).
- :func:`apply_retention` deletes raw text older than N days once its anonymized
  form exists; text that was never anonymized is kept until it is.

Snapshot files on disk hold only anonymized text; tainted snapshots are not used
again and the learning loop retrains without the erased data. This module knows
nothing of platforms' APIs or of models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.errors import NotFound
from storage.models import (
    Adapter,
    AdapterStatus,
    Feedback,
    Flag,
    Message,
    Reply,
    User,
    utcnow,
)
from storage.repositories import Audit, Snapshots, Users


@dataclass(frozen=True, slots=True)
class ErasureReport:
    messages: int
    replies: int
    votes: int
    flags: int
    tainted_snapshots: list[int]
    tainted_adapters: list[str]
    active_adapter_tainted: str | None

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
    # votes and flags on the replies to this person go with those replies
    session.execute(delete(Feedback).where(Feedback.reply_id.in_(reply_ids)))
    session.execute(delete(Flag).where(Flag.reply_id.in_(reply_ids)))
    session.execute(delete(Reply).where(Reply.id.in_(reply_ids)))
    session.execute(delete(Message).where(Message.user_id == uid))
    session.execute(delete(Feedback).where(Feedback.user_id == uid))
    session.execute(delete(Flag).where(Flag.user_id == uid))
    snapshots = Snapshots(session).taint_for_user(uid)
    adapters = (
        list(session.scalars(select(Adapter).where(Adapter.snapshot_id.in_(snapshots))))
        if snapshots
        else []
    )
    active = next((a.version for a in adapters if a.status is AdapterStatus.ACTIVE), None)
    session.delete(user)
    session.flush()
    report = ErasureReport(
        messages=n_messages,
        replies=n_replies,
        votes=n_votes,
        flags=n_flags,
        tainted_snapshots=snapshots,
        tainted_adapters=[a.version for a in adapters],
        active_adapter_tainted=active,
    )
    Audit(session).record(
        actor=actor,
        action="privacy.erase",
        target_type="user",
        target_id=str(uid),
        reason="erasure request",
        details={"platform": platform, **report.as_dict()},
    )
    return report


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


def apply_retention(session: Session, *, days: int, now: datetime | None = None) -> RetentionReport:
    """Delete raw text older than ``days`` whose anonymized form exists."""
    if days <= 0:
        raise ValueError("retention needs a positive number of days")
    cutoff = (now or utcnow()) - timedelta(days=days)
    n_messages = session.execute(
        update(Message)
        .where(
            Message.created_at < cutoff,
            Message.anon_text.is_not(None),
            Message.raw_text.is_not(None),
        )
        .values(raw_text=None)
    ).rowcount  # type: ignore[attr-defined]
    n_replies = session.execute(
        update(Reply)
        .where(Reply.created_at < cutoff, Reply.anon_text.is_not(None), Reply.text.is_not(None))
        .values(text=None)
    ).rowcount  # type: ignore[attr-defined]
    n_flags = session.execute(
        update(Flag)
        .where(
            Flag.created_at < cutoff,
            Flag.corrected_anon_text.is_not(None),
            Flag.corrected_text.is_not(None),
        )
        .values(corrected_text=None)
    ).rowcount  # type: ignore[attr-defined]
    waiting = session.scalar(
        select(func.count())
        .select_from(Message)
        .where(
            Message.created_at < cutoff, Message.anon_text.is_(None), Message.raw_text.is_not(None)
        )
    )
    return RetentionReport(
        messages=n_messages or 0,
        replies=n_replies or 0,
        flags=n_flags or 0,
        waiting_for_anonymization=int(waiting or 0),
    )
