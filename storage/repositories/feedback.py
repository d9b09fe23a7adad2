"""Judgements of replies: votes (feedback) and staff flags with corrections.

Each row names the reply it judges; which platform message a vote arrived on is
resolved before it gets here (``Replies.by_platform_message_id``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Feedback, Flag, utcnow
from storage.repositories.conversations import Replies


class FeedbackRepo:
    VALUES = (-1, 0, 1)

    def __init__(self, session: Session) -> None:
        self.s = session

    def vote(
        self,
        *,
        reply_id: int,
        user_id: int,
        value: int,
        source: str,
        reason: str | None = None,
    ) -> Feedback:
        """Record a vote; a later vote by the same user on the same reply replaces it.

        ``value`` is +1, -1, or 0 (retracted). A reason given with an earlier
        down-vote is kept unless a new one is given. A retraction only undoes a
        vote cast the same way: removing a 👍 reaction does not cancel a 👍 button.
        """
        if value not in self.VALUES:
            raise ValueError(f"a vote is -1, 0 or +1, not {value!r}")
        Replies(self.s).get(reply_id)
        row = self.s.scalar(select(Feedback).filter_by(reply_id=reply_id, user_id=user_id))
        if row is None:
            row = Feedback(
                reply_id=reply_id,
                user_id=user_id,
                value=value,
                source=source,
                reason=reason,
            )
            self.s.add(row)
        elif value == 0 and row.source != source:
            return row
        else:
            row.value = value
            row.source = source
            row.updated_at = utcnow()
            if reason is not None or value != -1:
                row.reason = reason
        self.s.flush()
        return row

    def for_reply(self, reply_id: int) -> list[Feedback]:
        return list(self.s.scalars(select(Feedback).filter_by(reply_id=reply_id)))

    def tally(self, reply_id: int) -> tuple[int, int]:
        votes = [f.value for f in self.for_reply(reply_id)]
        return votes.count(1), votes.count(-1)


class Flags:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        reply_id: int,
        user_id: int,
        reason: str | None,
        corrected_text: str | None,
    ) -> Flag:
        Replies(self.s).get(reply_id)
        row = Flag(
            reply_id=reply_id,
            user_id=user_id,
            reason=reason,
            corrected_text=corrected_text,
        )
        self.s.add(row)
        self.s.flush()
        return row

    def for_reply(self, reply_id: int) -> list[Flag]:
        return list(self.s.scalars(select(Flag).filter_by(reply_id=reply_id)))
