"""Repository round trips, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.db import transaction
from storage.errors import NotFound
from storage.models import (
    AdapterStatus,
    AuditEntry,
    ConversationKind,
    ProcessedEvent,
    Role,
    RunStatus,
)
from storage.repositories import (
    Adapters,
    Audit,
    Conversations,
    FeedbackRepo,
    Flags,
    InvalidTransition,
    LearningRuns,
    Messages,
    ProcessedEvents,
    Replies,
    Snapshots,
    Users,
    Workspaces,
)


def _reply(s: Session, text: str = "hi", *, conversation_id: int | None = None) -> tuple[int, int]:
    user = Users(s).upsert("slack", "U1", display_name="Ann")
    if conversation_id is None:
        ws = Workspaces(s).get_or_create("slack", "T1", "Acme")
        conversation_id = (
            Conversations(s)
            .get_or_create(
                "slack", "C1", thread_id="1.0", kind=ConversationKind.THREAD, workspace_id=ws.id
            )
            .id
        )
    msg = Messages(s).add(conversation_id=conversation_id, user_id=user.id, raw_text=text)
    reply = Replies(s).add(
        message_id=msg.id,
        conversation_id=conversation_id,
        text=f"re: {text}",
        finish_reason="stop",
        adapter_version="base",
        model_id="m",
        replica_id="r1",
        latency_ms=10.0,
        ttft_ms=2.0,
        prompt_tokens=5,
        completion_tokens=3,
        generation={"temperature": 0.0},
        platform_message_id=f"p-{msg.id}",
    )
    return reply.id, user.id


def test_users_and_conversations_round_trip(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        u = Users(s).upsert("discord", "42", display_name="Bo", role=Role.STAFF)
        again = Users(s).upsert("discord", "42", role=Role.MAINTAINER)
        assert u.id == again.id and again.role is Role.MAINTAINER and again.display_name == "Bo"
        c1 = Conversations(s).get_or_create("discord", "ch", kind=ConversationKind.CHANNEL)
        c2 = Conversations(s).get_or_create("discord", "ch", kind=ConversationKind.CHANNEL)
        c3 = Conversations(s).get_or_create(
            "discord", "ch", thread_id="t", kind=ConversationKind.THREAD
        )
        assert c1.id == c2.id != c3.id
    with transaction(sessions) as s:
        u2 = Users(s).get("discord", "42")
        assert u2 is not None and u2.role is Role.MAINTAINER


def test_reply_history_and_lookup(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        r1, _ = _reply(s, "one")
        conv = Replies(s).get(r1).conversation_id
        r2, _ = _reply(s, "two", conversation_id=conv)
        r3, _ = _reply(s, "three", conversation_id=conv)
        turns = Messages(s).recent_turns(conv, max_turns=4)
        assert [(t.role, t.text) for t in turns] == [
            ("user", "two"),
            ("assistant", "re: two"),
            ("user", "three"),
            ("assistant", "re: three"),
        ]
        last_msg = Replies(s).get(r3).message_id
        before = Messages(s).recent_turns(conv, max_turns=10, before_message_id=last_msg)
        assert [t.text for t in before] == ["one", "re: one", "two", "re: two"]
        assert Messages(s).recent_turns(conv, max_turns=0) == []
        found = Replies(s).by_platform_message_id(
            "slack", Replies(s).get(r2).platform_message_id or ""
        )
        assert found is not None and found.id == r2
        assert Replies(s).by_platform_message_id("discord", "p-1") is None
        last = Replies(s).last_in_conversation(conv)
        assert last is not None and last.id == r3
        row = Replies(s).get(r1)
        assert (row.adapter_version, row.replica_id, row.prompt_tokens, row.completion_tokens) == (
            "base", "r1", 5, 3,
        )  # fmt: skip
        assert row.generation == {"temperature": 0.0}


def test_last_vote_wins(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reply_id, user_id = _reply(s)
        fb = FeedbackRepo(s)
        fb.vote(reply_id=reply_id, user_id=user_id, value=1, source="button")
        fb.vote(reply_id=reply_id, user_id=user_id, value=-1, source="reaction", reason="wrong")
        other = Users(s).upsert("slack", "U2").id
        fb.vote(reply_id=reply_id, user_id=other, value=1, source="button")
    with transaction(sessions) as s:
        rows = FeedbackRepo(s).for_reply(reply_id)
        mine = [r for r in rows if r.user_id == user_id]
        assert len(rows) == 2 and len(mine) == 1
        assert (mine[0].value, mine[0].source, mine[0].reason) == (-1, "reaction", "wrong")
        assert FeedbackRepo(s).tally(reply_id) == (1, 1)
        # removing a reaction does not cancel a vote cast another way...
        FeedbackRepo(s).vote(reply_id=reply_id, user_id=user_id, value=0, source="button")
        assert FeedbackRepo(s).tally(reply_id) == (1, 1)
        # ...but retracts the reaction vote it stands for
        FeedbackRepo(s).vote(reply_id=reply_id, user_id=user_id, value=0, source="reaction")
        assert FeedbackRepo(s).tally(reply_id) == (1, 0)
        with pytest.raises(ValueError, match="-1, 0 or \\+1"):
            FeedbackRepo(s).vote(reply_id=reply_id, user_id=user_id, value=2, source="button")
        with pytest.raises(NotFound):
            FeedbackRepo(s).vote(reply_id=999_999, user_id=user_id, value=1, source="button")


def test_feedback_unique_per_user_and_reply(sessions: sessionmaker[Session]) -> None:
    from storage.models import Feedback

    with transaction(sessions) as s:
        reply_id, user_id = _reply(s)
    with pytest.raises(IntegrityError), transaction(sessions) as s:
        s.add(Feedback(reply_id=reply_id, user_id=user_id, value=1, source="button"))
        s.add(Feedback(reply_id=reply_id, user_id=user_id, value=-1, source="button"))
        s.flush()


def test_database_errors_never_carry_the_statements_values(
    sessions: sessionmaker[Session],
) -> None:
    """Errors are logged and shown; their text must not hold message text or ids."""
    from storage.models import Feedback

    with transaction(sessions) as s:
        reply_id, user_id = _reply(s)
    secret_reason = "my card is 4111 1111 1111 1111"
    with pytest.raises(IntegrityError) as info, transaction(sessions) as s:
        for value in (1, -1):
            s.add(
                Feedback(
                    reply_id=reply_id, user_id=user_id, value=value, source="x",
                    reason=secret_reason,
                )
            )  # fmt: skip
        s.flush()
    assert secret_reason not in str(info.value)
    assert "hidden due to hide_parameters" in str(info.value)


def test_flags(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reply_id, user_id = _reply(s)
        Flags(s).add(reply_id=reply_id, user_id=user_id, reason="wrong", corrected_text="right")
    with transaction(sessions) as s:
        (flag,) = Flags(s).for_reply(reply_id)
        assert (flag.reason, flag.corrected_text, flag.corrected_anon_text) == (
            "wrong",
            "right",
            None,
        )


def test_event_dedupe_is_a_unique_constraint(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        assert ProcessedEvents(s).claim("slack", "Ev1") is True
        assert ProcessedEvents(s).claim("slack", "Ev1") is False
        assert ProcessedEvents(s).claim("discord", "Ev1") is True
    with transaction(sessions) as s:  # a second replica (new session) agrees
        assert ProcessedEvents(s).claim("slack", "Ev1") is False
    # and the guard is the database's, not the repository's
    with pytest.raises(IntegrityError), transaction(sessions) as s:
        s.add(ProcessedEvent(platform="slack", event_id="Ev1"))
        s.flush()
    with transaction(sessions) as s:
        n = s.scalars(select(ProcessedEvent).filter_by(event_id="Ev1")).all()
        assert len(n) == 2


def test_adapter_lifecycle_audit_and_rollback(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reg = Adapters(s)
        for v in ("v1", "v2"):
            reg.register(version=v, base_model="smol")
            reg.transition(v, AdapterStatus.CANDIDATE, actor="learning")
            reg.set_metrics(v, {"win_rate": 0.6})
            reg.transition(v, AdapterStatus.PENDING, actor="learning", reason="beat active")
        reg.transition("v1", AdapterStatus.ACTIVE, actor="slack:UMAINT", reason="looks good")
        reg.transition("v2", AdapterStatus.ACTIVE, actor="slack:UMAINT")
        assert reg.get("v1").status is AdapterStatus.RETIRED
        assert reg.active() is not None and reg.active().version == "v2"  # type: ignore[union-attr]
        with pytest.raises(InvalidTransition, match="cannot become"):
            reg.transition("v2", AdapterStatus.CANDIDATE, actor="x")
        back = reg.rollback(actor="console:ops")
        assert back is not None and back.version == "v1"
        assert reg.get("v2").status is AdapterStatus.RETIRED
        assert reg.history() == ["v1"]
        back = reg.rollback(actor="console:ops")  # walks further back, not back to v2
        assert back is None and reg.active() is None
        reg.transition("v2", AdapterStatus.ACTIVE, actor="slack:UMAINT", reason="re-approved")
        assert reg.history() == ["v2"]
        assert reg.get("v1").metrics == {"win_rate": 0.6}
        with pytest.raises(NotFound):
            reg.get("nope")
    with transaction(sessions) as s:
        trail = Audit(s).for_target("adapter", "v1")
        moves = [
            (e.details.get("from"), e.details.get("to"), e.actor)
            for e in trail
            if e.action == "adapter.status"
        ]
        assert moves[:3] == [
            ("training", "candidate", "learning"),
            ("candidate", "pending", "learning"),
            ("pending", "active", "slack:UMAINT"),
        ]
        assert ("active", "retired", "slack:UMAINT") in moves
        assert all(isinstance(e, AuditEntry) and e.at is not None for e in trail)


def test_rollback_to_base_and_nothing_to_roll_back(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        reg = Adapters(s)
        with pytest.raises(InvalidTransition, match="base model"):
            reg.rollback(actor="x")
        reg.register(version="only", base_model="smol")
        for st in (AdapterStatus.CANDIDATE, AdapterStatus.PENDING, AdapterStatus.ACTIVE):
            reg.transition("only", st, actor="x")
        assert reg.rollback(actor="x") is None
        assert reg.active() is None


def test_tainted_adapter_can_never_be_activated(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        _reply_id, user_id = _reply(s)
        snap = Snapshots(s).add(
            content_hash="h" * 64, path="/x", counts={"kept": 1},
            since_message_id=None, until_message_id=5, users={user_id: 3},
        )  # fmt: skip
        reg = Adapters(s)
        reg.register(version="t1", base_model="smol", snapshot_id=snap.id)
        reg.transition("t1", AdapterStatus.CANDIDATE, actor="x")
        reg.transition("t1", AdapterStatus.PENDING, actor="x")
        assert Snapshots(s).taint_for_user(user_id) == [snap.id]
        s.expire_all()
        assert Snapshots(s).latest().tainted is True  # type: ignore[union-attr]
        with pytest.raises(InvalidTransition, match="erased data"):
            reg.transition("t1", AdapterStatus.ACTIVE, actor="x")


def test_taint_reaches_descendants_and_takes_them_out_of_service(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        _reply_id, user_id = _reply(s)
        snap = Snapshots(s).add(
            content_hash="t" * 64, path="/x", counts={}, since_message_id=None,
            until_message_id=1, users={user_id: 1},
        )  # fmt: skip
        other = Snapshots(s).add(
            content_hash="o" * 64, path="/y", counts={}, since_message_id=None,
            until_message_id=1, users={},
        )  # fmt: skip
        reg = Adapters(s)
        for version, snapshot_id, parent in (
            ("a1", snap.id, None),
            ("a2", other.id, "a1"),
            ("a3", other.id, "a2"),
            ("b1", other.id, None),
        ):
            reg.register(
                version=version, base_model="m", snapshot_id=snapshot_id, parent_version=parent
            )
            reg.transition(version, AdapterStatus.CANDIDATE, actor="x")
            reg.transition(version, AdapterStatus.PENDING, actor="x")
        reg.transition("a1", AdapterStatus.ACTIVE, actor="x")
        reg.transition("a2", AdapterStatus.ACTIVE, actor="x")  # a1 retired
        reg.set_canary("a3", 25, actor="x")
        assert Snapshots(s).taint_for_user(user_id, actor="erasure", reason="erased") == [snap.id]
        assert [a.version for a in reg.list() if a.tainted] == ["a1", "a2", "a3"]
        # tainting again finds the same chain and writes no second audit row
        chain = reg.taint_trained_on([snap.id], actor="erasure", reason="erased")
        assert [a.version for a in chain] == ["a1", "a2", "a3"]
        assert len(s.scalars(select(AuditEntry).filter_by(action="adapter.taint")).all()) == 3

        done = reg.withdraw_tainted(actor="erasure", reason="erased")
        # the only earlier adapter (a1) is tainted too: the base model serves
        assert (done.retired, done.now_active, done.canaries_stopped) == ("a2", "base", ["a3"])
        assert reg.active() is None and reg.canary() is None
        assert reg.get("a2").status is AdapterStatus.RETIRED
        nothing = reg.withdraw_tainted(actor="erasure", reason="erased")
        assert (nothing.retired, nothing.now_active, nothing.canaries_stopped) == (None, None, [])
        reg.transition("b1", AdapterStatus.ACTIVE, actor="x")  # untainted ones still can
        assert Snapshots(s).forget_user(user_id) == 1
        assert Snapshots(s).taint_for_user(user_id) == []


def test_audit_actor_pseudonymized(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        for actor in ("slack:U1", "slack:U1", "slack:U2"):
            Audit(s).record(actor=actor, action="x", target_type="t", target_id="1")
        assert Audit(s).pseudonymize_actor("slack:U1") == 2
        s.expire_all()
        actors = [e.actor for e in Audit(s).for_target("t", "1")]
        assert actors == ["erased-user", "erased-user", "slack:U2"]


def test_learning_runs(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        run = LearningRuns(s).start(trigger="schedule")
        assert run.status is RunStatus.RUNNING
        LearningRuns(s).finish(run.id, status=RunStatus.SKIPPED, report={"reason": "no data"})
    with transaction(sessions) as s:
        done = LearningRuns(s).finish(run.id, status=RunStatus.SKIPPED)
        assert done.finished_at is not None
        with pytest.raises(NotFound):
            LearningRuns(s).finish(12345, status=RunStatus.FAILED)


def test_role_is_checked_by_the_database(sessions: sessionmaker[Session]) -> None:
    from sqlalchemy import text

    with pytest.raises(IntegrityError), transaction(sessions) as s:
        s.execute(
            text(
                "INSERT INTO users (platform, external_id, role, created_at) "
                "VALUES ('x', 'y', 'overlord', CURRENT_TIMESTAMP)"
            )
        )


def test_two_first_messages_of_one_person_at_once_make_one_user(
    sessions: sessionmaker[Session],
) -> None:
    """A concurrent insert of the same person/conversation returns the row that won."""
    import threading

    from storage.models import Conversation, User
    from storage.repositories import Conversations, Users

    first = sessions()
    Users(first).upsert("slack", "URACE")
    Conversations(first).get_or_create("slack", "C", thread_id="t", kind=ConversationKind.THREAD)
    got: dict[str, int] = {}

    def second() -> None:
        with sessions() as s, s.begin():
            got["user"] = Users(s).upsert("slack", "URACE").id
            conv = Conversations(s).get_or_create(
                "slack", "C", thread_id="t", kind=ConversationKind.THREAD
            )
            got["conv"] = conv.id

    t = threading.Thread(target=second)
    t.start()
    t.join(0.5)  # blocked on the first transaction's uncommitted rows (or racing it)
    first.commit()
    first.close()
    t.join(30)
    assert not t.is_alive()
    with sessions() as s:
        assert s.scalars(select(User.id).filter_by(external_id="URACE")).all() == [got["user"]]
        assert s.scalars(select(Conversation.id)).all() == [got["conv"]]
