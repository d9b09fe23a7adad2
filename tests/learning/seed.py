"""Small database seeding helpers for the learning-loop tests (replies, votes, flags)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.models import ConversationKind, Role
from storage.repositories import Conversations, FeedbackRepo, Flags, Messages, Replies, Users


def add_reply(
    s: Session,
    *,
    adapter_version: str = "base",
    channel: str = "C1",
    at: datetime | None = None,
) -> int:
    """One question and the bot's reply in ``channel``; returns the reply id."""
    asker = Users(s).upsert("console", f"asker-{channel}")
    conv = Conversations(s).get_or_create("console", channel, kind=ConversationKind.CONSOLE)
    msg = Messages(s).add(conversation_id=conv.id, user_id=asker.id, raw_text="How do I log in?")
    reply = Replies(s).add(
        message_id=msg.id,
        conversation_id=conv.id,
        text="Use the login page.",
        finish_reason="stop",
        adapter_version=adapter_version,
        model_id="m",
        replica_id="r",
        latency_ms=1.0,
        ttft_ms=1.0,
        prompt_tokens=3,
        completion_tokens=4,
    )
    if at is not None:
        reply.created_at = at
        s.flush()
    return reply.id


def add_votes(s: Session, reply_id: int, values: list[int], *, voter_prefix: str = "v") -> None:
    """One vote per value, each by a different user."""
    for i, value in enumerate(values):
        voter = Users(s).upsert("console", f"{voter_prefix}{reply_id}-{i}")
        FeedbackRepo(s).vote(reply_id=reply_id, user_id=voter.id, value=value, source="button")


def add_flag(s: Session, reply_id: int) -> None:
    staff = Users(s).upsert("console", "staff-1", role=Role.STAFF)
    Flags(s).add(reply_id=reply_id, user_id=staff.id, reason="wrong", corrected_text="Right.")


def seed_votes(sessions: sessionmaker[Session], n: int, *, channel: str = "C1") -> int:
    """A reply with ``n`` up-votes; returns its id."""
    with transaction(sessions) as s:
        reply_id = add_reply(s, channel=channel)
        add_votes(s, reply_id, [1] * n, voter_prefix=f"{channel}-")
    return reply_id
