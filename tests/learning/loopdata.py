"""Conversations for learning-loop tests: questions with one right answer each."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.models import ConversationKind
from storage.repositories import Conversations, FeedbackRepo, Flags, Messages, Replies, Users

COLORS = ["red", "blue", "green", "amber", "violet", "silver", "orange", "black"]


def qa(i: int) -> tuple[str, str]:
    return f"What is the code of item {i}?", f"The code of item {i} is {COLORS[i % 8]} {i % 5}."


def add_turn(
    s: Session, thread: str, user: str, question: str, answer: str, *, vote: int = 1
) -> tuple[int, int]:
    """One customer question, the bot's answer and the customer's vote."""
    u = Users(s).upsert("slack", user)
    conv = Conversations(s).get_or_create(
        "slack", "C1", thread_id=thread, kind=ConversationKind.THREAD
    )
    msg = Messages(s).add(conversation_id=conv.id, user_id=u.id, raw_text=question)
    reply = Replies(s).add(
        message_id=msg.id, conversation_id=conv.id, text=answer, finish_reason="stop",
        adapter_version="base", model_id="m", replica_id="r", latency_ms=1.0, ttft_ms=1.0,
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    if vote:
        FeedbackRepo(s).vote(reply_id=reply.id, user_id=u.id, value=vote, source="button")
    return reply.id, u.id


def seed_support_chats(
    sessions: sessionmaker[Session], n: int = 32, *, start: int = 0, corrections: int = 4
) -> dict[str, int]:
    """``n`` answered questions with 👍, and ``corrections`` wrong answers that staff
    flagged and corrected (the correction is the right answer)."""
    users: dict[str, int] = {}
    with transaction(sessions) as s:
        staff = Users(s).upsert("slack", "USTAFF").id
        for i in range(start, start + n):
            q, a = qa(i)
            if i - start < corrections:
                reply_id, uid = add_turn(s, f"t{i}", f"U{i}", q, "I do not know.", vote=-1)
                Flags(s).add(reply_id=reply_id, user_id=staff, reason="wrong", corrected_text=a)
            else:
                reply_id, uid = add_turn(s, f"t{i}", f"U{i}", q, a)
            users[f"U{i}"] = uid
    return users
