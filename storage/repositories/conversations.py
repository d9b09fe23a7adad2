"""Who talks where, and what was said: workspaces, users, conversations, messages,
replies (and the platform messages a reply was posted as), processed event ids.

The live path writes these on every chat turn; nothing here knows a platform's API,
only the platform names and ids the bot hands in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.errors import NotFound, StorageError
from storage.models import (
    Conversation,
    ConversationKind,
    Message,
    ProcessedEvent,
    Reply,
    ReplyPart,
    Role,
    User,
    Workspace,
)
from storage.repositories._base import add_unique


class Workspaces:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get_or_create(self, platform: str, external_id: str, name: str | None = None) -> Workspace:
        def find() -> Workspace | None:
            return self.s.scalar(
                select(Workspace).filter_by(platform=platform, external_id=external_id)
            )

        row = find()
        if row is None:
            row = add_unique(
                self.s, Workspace(platform=platform, external_id=external_id, name=name), find
            )
        elif name and row.name != name:
            row.name = name
        return row


class Users:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get(self, platform: str, external_id: str) -> User | None:
        return self.s.scalar(select(User).filter_by(platform=platform, external_id=external_id))

    def upsert(
        self,
        platform: str,
        external_id: str,
        *,
        display_name: str | None = None,
        role: Role | None = None,
    ) -> User:
        """Create the user or refresh its name and role (roles come from configuration)."""
        row = self.get(platform, external_id)
        if row is None:
            new = User(
                platform=platform,
                external_id=external_id,
                display_name=display_name,
                role=role or Role.CUSTOMER,
            )
            row = add_unique(self.s, new, lambda: self.get(platform, external_id))
            if row is new:
                return row
        if display_name and row.display_name != display_name:
            row.display_name = display_name
        if role is not None and row.role != role:
            row.role = role
        return row


class Conversations:
    def __init__(self, session: Session) -> None:
        self.s = session

    def get_or_create(
        self,
        platform: str,
        channel_id: str,
        *,
        thread_id: str = "",
        kind: ConversationKind,
        workspace_id: int | None = None,
    ) -> Conversation:
        def find() -> Conversation | None:
            return self.s.scalar(
                select(Conversation).filter_by(
                    platform=platform, channel_id=channel_id, thread_id=thread_id
                )
            )

        row = find()
        if row is None:
            new = Conversation(
                platform=platform,
                channel_id=channel_id,
                thread_id=thread_id,
                kind=kind,
                workspace_id=workspace_id,
            )
            row = add_unique(self.s, new, find)
        return row


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of stored history: ``role`` is "user" or "assistant"."""

    role: str
    text: str


class Messages:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        conversation_id: int,
        user_id: int,
        raw_text: str,
        platform_message_id: str | None = None,
    ) -> Message:
        row = Message(
            conversation_id=conversation_id,
            user_id=user_id,
            raw_text=raw_text,
            platform_message_id=platform_message_id,
            char_count=len(raw_text),
        )
        self.s.add(row)
        self.s.flush()
        return row

    def get(self, message_id: int) -> Message:
        row = self.s.get(Message, message_id)
        if row is None:
            raise NotFound(f"message {message_id} does not exist")
        return row

    def recent_turns(
        self,
        conversation_id: int,
        *,
        max_turns: int,
        before_message_id: int | None = None,
    ) -> list[Turn]:
        """The last answered exchanges of a conversation, oldest first.

        Each stored message with a completed reply gives a user turn and an
        assistant turn; messages that got no reply (rejected input) are skipped.
        At most ``max_turns`` turns are returned.
        """
        if max_turns <= 0:
            return []
        q = (
            select(Message.raw_text, Reply.text)
            .join(Reply, Reply.message_id == Message.id)
            .where(Message.conversation_id == conversation_id)
            .where(Message.raw_text.is_not(None), Reply.text.is_not(None))
            .order_by(Message.id.desc(), Reply.id.desc())
        )
        if before_message_id is not None:
            q = q.where(Message.id < before_message_id)
        pairs = self.s.execute(q.limit((max_turns + 1) // 2)).all()
        turns: list[Turn] = []
        for raw, reply in reversed(pairs):
            turns += [Turn("user", raw or ""), Turn("assistant", reply or "")]
        return turns[-max_turns:]

    def count(self) -> int:
        return int(self.s.scalar(select(func.count()).select_from(Message)) or 0)


class Replies:
    def __init__(self, session: Session) -> None:
        self.s = session

    def add(
        self,
        *,
        message_id: int,
        conversation_id: int,
        text: str,
        finish_reason: str,
        adapter_version: str,
        model_id: str,
        replica_id: str,
        latency_ms: float,
        ttft_ms: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        generation: dict[str, Any] | None = None,
        platform_message_id: str | None = None,
    ) -> Reply:
        row = Reply(
            message_id=message_id,
            conversation_id=conversation_id,
            text=text,
            finish_reason=finish_reason,
            adapter_version=adapter_version,
            model_id=model_id,
            replica_id=replica_id,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            generation=generation or {},
            platform_message_id=platform_message_id,
        )
        self.s.add(row)
        self.s.flush()
        return row

    def get(self, reply_id: int) -> Reply:
        row = self.s.get(Reply, reply_id)
        if row is None:
            raise NotFound(f"reply {reply_id} does not exist")
        return row

    def set_platform_message_id(self, reply_id: int, platform_message_id: str) -> None:
        self.get(reply_id).platform_message_id = platform_message_id

    def by_platform_message_id(
        self, platform: str, platform_message_id: str, *, channel_id: str = ""
    ) -> Reply | None:
        """The reply that the platform message ``platform_message_id`` shows (any part
        of it), or None. ``channel_id`` picks the right one where message ids are unique
        per channel only (Slack's ``ts``); without it, or without a part in that channel,
        the one part with that id counts."""
        reply_id = ReplyParts(self.s).reply_id_of(
            platform, platform_message_id, channel_id=channel_id
        )
        if reply_id is not None:
            return self.get(reply_id)
        # replies stored before reply parts existed keep the id of their last part here
        return self.s.scalar(
            select(Reply)
            .join(Conversation, Conversation.id == Reply.conversation_id)
            .where(Conversation.platform == platform)
            .where(Reply.platform_message_id == platform_message_id)
            .order_by(Reply.id)
            .limit(1)
        )

    def last_in_conversation(self, conversation_id: int) -> Reply | None:
        return self.s.scalar(
            select(Reply)
            .where(Reply.conversation_id == conversation_id)
            .order_by(Reply.id.desc())
            .limit(1)
        )


class ReplyParts:
    """The platform messages a reply was posted as, in order (a long reply is split
    into several); any one of them leads back to the reply."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def record(
        self,
        reply_id: int,
        *,
        platform: str,
        channel_id: str,
        message_ids: Sequence[str],
    ) -> list[ReplyPart]:
        """Store that ``reply_id`` is shown by ``message_ids`` (first part first) in
        ``channel_id``, replacing what was recorded for it before; the reply's own
        ``platform_message_id`` becomes the last part's (the one with the buttons).
        A message shows one reply: one recorded for another reply before now shows
        this one (platforms do not reuse ids; a sink that does must not lose a reply).

        Raises :class:`ValueError` for no ids, an empty or repeated id.
        """
        ids = list(message_ids)
        if not ids or not all(ids) or len(set(ids)) != len(ids):
            raise ValueError(f"reply parts need distinct, non-empty message ids: {ids!r}")
        reply = Replies(self.s).get(reply_id)
        self.s.execute(
            delete(ReplyPart).where(
                or_(
                    ReplyPart.reply_id == reply_id,
                    (ReplyPart.platform == platform)
                    & (ReplyPart.channel_id == channel_id)
                    & ReplyPart.platform_message_id.in_(ids),
                )
            )
        )
        rows = [
            ReplyPart(
                reply_id=reply_id,
                platform=platform,
                channel_id=channel_id,
                platform_message_id=message_id,
                part_index=index,
            )
            for index, message_id in enumerate(ids)
        ]
        self.s.add_all(rows)
        reply.platform_message_id = ids[-1]
        try:
            self.s.flush()
        except IntegrityError as exc:  # a concurrent record of the same messages
            raise StorageError(f"the parts of reply {reply_id} changed meanwhile") from exc
        return rows

    def of_reply(self, reply_id: int) -> list[ReplyPart]:
        """The parts of a reply, first part first."""
        return list(
            self.s.scalars(
                select(ReplyPart).filter_by(reply_id=reply_id).order_by(ReplyPart.part_index)
            )
        )

    def reply_id_of(
        self, platform: str, platform_message_id: str, *, channel_id: str = ""
    ) -> int | None:
        """The reply whose part is this message (see :meth:`Replies.by_platform_message_id`)."""
        found = self.s.execute(
            select(ReplyPart.reply_id, ReplyPart.channel_id).where(
                ReplyPart.platform == platform,
                ReplyPart.platform_message_id == platform_message_id,
            )
        ).all()
        in_channel = [reply_id for reply_id, channel in found if channel == channel_id]
        if in_channel:
            return int(in_channel[0])
        if len(found) == 1:
            return int(found[0][0])
        return None


class ProcessedEvents:
    """Platform event ids already handled; the database's unique constraint decides."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def claim(self, platform: str, event_id: str) -> bool:
        """True the first time an event id is seen, False for every redelivery.

        Safe across replicas: two concurrent claims race on the unique constraint
        and exactly one wins.
        """
        try:
            with self.s.begin_nested():
                self.s.add(ProcessedEvent(platform=platform, event_id=event_id))
        except IntegrityError:
            return False
        return True
