"""Reply parts: every platform message a reply was posted as leads back to it.

On SQLite and PostgreSQL (the ``sessions`` fixture runs each test on both).
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.errors import NotFound
from storage.models import ConversationKind, Reply, ReplyPart
from storage.repositories import Conversations, Messages, Replies, ReplyParts, Users


def _reply(s: Session, *, platform: str = "slack", channel: str = "C1") -> int:
    user = Users(s).upsert(platform, "U1")
    conversation = Conversations(s).get_or_create(
        platform, channel, thread_id="1.0", kind=ConversationKind.THREAD
    )
    message = Messages(s).add(conversation_id=conversation.id, user_id=user.id, raw_text="q")
    return (
        Replies(s)
        .add(
            message_id=message.id,
            conversation_id=conversation.id,
            text="a long answer",
            finish_reason="stop",
            adapter_version="base",
            model_id="m",
            replica_id="r1",
            latency_ms=1.0,
            ttft_ms=None,
            prompt_tokens=1,
            completion_tokens=1,
        )
        .id
    )


def test_every_part_finds_its_reply(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        one = _reply(s)
        two = _reply(s)
        ReplyParts(s).record(one, platform="slack", channel_id="C1", message_ids=["1.1", "1.2"])
        ReplyParts(s).record(
            two, platform="slack", channel_id="C1", message_ids=["2.1", "2.2", "2.3"]
        )
    with transaction(sessions) as s:
        parts = ReplyParts(s).of_reply(two)
        assert [(p.part_index, p.platform_message_id, p.channel_id) for p in parts] == [
            (0, "2.1", "C1"),
            (1, "2.2", "C1"),
            (2, "2.3", "C1"),
        ]
        for ts, expected in [("1.1", one), ("1.2", one), ("2.1", two), ("2.3", two)]:
            found = Replies(s).by_platform_message_id("slack", ts, channel_id="C1")
            assert found is not None and found.id == expected
            assert ReplyParts(s).reply_id_of("slack", ts) == expected
        # the part with the buttons is the reply's own id, as before parts existed
        assert Replies(s).get(two).platform_message_id == "2.3"
        assert Replies(s).by_platform_message_id("discord", "2.1") is None
        assert Replies(s).by_platform_message_id("slack", "9.9") is None


def test_recording_again_replaces_the_parts(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reply_id = _reply(s)
        ReplyParts(s).record(reply_id, platform="slack", channel_id="C1", message_ids=["a", "b"])
    with transaction(sessions) as s:
        ReplyParts(s).record(reply_id, platform="slack", channel_id="C1", message_ids=["a"])
    with transaction(sessions) as s:
        assert [p.platform_message_id for p in ReplyParts(s).of_reply(reply_id)] == ["a"]
        assert ReplyParts(s).reply_id_of("slack", "b") is None


def test_message_ids_unique_per_channel(sessions: sessionmaker[Session]) -> None:
    """A Slack ``ts`` is unique within its channel only: the same ts in two channels
    is two messages, told apart by the channel."""
    with transaction(sessions) as s:
        here = _reply(s, channel="C1")
        there = _reply(s, channel="C2")
        ReplyParts(s).record(here, platform="slack", channel_id="C1", message_ids=["5.0"])
        ReplyParts(s).record(there, platform="slack", channel_id="C2", message_ids=["5.0"])
    with transaction(sessions) as s:
        assert ReplyParts(s).reply_id_of("slack", "5.0", channel_id="C1") == here
        assert ReplyParts(s).reply_id_of("slack", "5.0", channel_id="C2") == there
        assert ReplyParts(s).reply_id_of("slack", "5.0") is None  # ambiguous without one


def test_a_message_shows_the_reply_recorded_last(sessions: sessionmaker[Session]) -> None:
    """Platforms do not reuse message ids; should a sink report one twice, the message
    shows the newer reply and recording it never fails the newer reply."""
    with transaction(sessions) as s:
        old = _reply(s)
        new = _reply(s)
        ReplyParts(s).record(old, platform="slack", channel_id="C1", message_ids=["1.1", "1.2"])
        ReplyParts(s).record(new, platform="slack", channel_id="C1", message_ids=["1.2"])
    with transaction(sessions) as s:
        assert ReplyParts(s).reply_id_of("slack", "1.2", channel_id="C1") == new
        assert [p.platform_message_id for p in ReplyParts(s).of_reply(old)] == ["1.1"]
        assert ReplyParts(s).reply_id_of("slack", "1.1", channel_id="C1") == old


def test_bad_part_lists_are_refused(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reply_id = _reply(s)
        for ids in ([], ["a", ""], ["a", "a"]):
            with pytest.raises(ValueError, match="distinct, non-empty"):
                ReplyParts(s).record(reply_id, platform="slack", channel_id="C1", message_ids=ids)
        with pytest.raises(NotFound):
            ReplyParts(s).record(
                reply_id + 99, platform="slack", channel_id="C1", message_ids=["x"]
            )


def test_parts_go_with_their_reply(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reply_id = _reply(s, platform="discord", channel="123")
        ReplyParts(s).record(reply_id, platform="discord", channel_id="123", message_ids=["7", "8"])
    with transaction(sessions) as s:  # erasure deletes replies with plain DELETEs
        s.execute(delete(Reply).where(Reply.id == reply_id))
    with transaction(sessions) as s:
        assert s.scalar(select(func.count()).select_from(ReplyPart)) == 0
        assert ReplyParts(s).reply_id_of("discord", "7") is None


def test_replies_from_before_parts_are_still_found(sessions: sessionmaker[Session]) -> None:
    """Replies stored before the parts table have only ``replies.platform_message_id``."""
    with transaction(sessions) as s:
        reply_id = _reply(s)
        Replies(s).set_platform_message_id(reply_id, "old.1")
    with transaction(sessions) as s:
        found = Replies(s).by_platform_message_id("slack", "old.1", channel_id="C1")
        assert found is not None and found.id == reply_id
