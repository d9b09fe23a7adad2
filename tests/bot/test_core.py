"""The core on both databases, with a scripted generator at the serving boundary."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import (
    CommandEvent,
    Core,
    CoreConfig,
    FlagEvent,
    MessageEvent,
    Person,
    Place,
    RolePolicy,
    VoteEvent,
)
from bot.core.events import ReplyRef
from serving.errors import EngineBusy, ServingError
from storage.db import transaction
from storage.models import Adapter, AdapterStatus, Feedback, Flag, Message, Reply, Role, User
from storage.repositories import Adapters
from tests.bot.fakes import RecordingSink, ScriptedGenerator
from tests.conftest import run

PLACE = Place(
    platform="slack", channel_id="C1", thread_id="1700.1", kind="thread", workspace_id="T1"
)
ANN = Person(user_id="UANN", display_name="Ann")
STAFF = Person(user_id="USTAFF")
MAINT = Person(user_id="UMAINT")
GROUPED = Person(user_id="UGRP", groups=("slack-group:S-SUPPORT",))


def make_core(
    sessions: sessionmaker[Session], generator: ScriptedGenerator | None = None, **config: object
) -> Core:
    return Core(
        generator=generator or ScriptedGenerator(),
        sessions=sessions,
        roles=RolePolicy(
            staff=["slack:USTAFF", "slack-group:S-SUPPORT"], maintainers=["slack:UMAINT"]
        ),
        config=CoreConfig(system_prompt="Be brief.", **config),  # type: ignore[arg-type]
    )


def say(
    core: Core, text: str, *, event_id: str = "", who: Person = ANN
) -> tuple[RecordingSink, object]:
    sink = RecordingSink(platform_id="ts-1")
    outcome = run(
        core.on_message(MessageEvent(place=PLACE, author=who, text=text, event_id=event_id), sink)
    )
    return sink, outcome


def test_message_is_answered_streamed_and_recorded(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator(version="v7")
    core = make_core(sessions, gen)
    sink, outcome = say(core, "How do I reset my password?", event_id="Ev1")
    assert "".join(sink.deltas) == "answer: How do I reset my password?"
    assert sink.finals == [("answer: How do I reset my password?", outcome.reply_id)]  # type: ignore[attr-defined]
    (request,) = gen.requests
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.messages[0].content == "Be brief."
    assert request.conversation_key == "slack:C1:1700.1"
    with sessions() as s:
        msg = s.scalars(select(Message)).one()
        reply = s.scalars(select(Reply)).one()
        assert msg.raw_text == "How do I reset my password?" and msg.anon_text is None
        assert reply.message_id == msg.id
        assert (reply.adapter_version, reply.replica_id, reply.model_id) == (
            "v7",
            "replica-test",
            "scripted",
        )
        assert reply.latency_ms == 12.5 and reply.completion_tokens > 0 and reply.prompt_tokens > 0
        assert reply.platform_message_id == "ts-1"
        assert s.scalars(select(User)).one().display_name == "Ann"


def test_thread_follow_up_uses_context(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core = make_core(sessions, gen, context_turns=2)
    say(core, "first question")
    say(core, "second question")
    say(core, "third question")
    roles = [(m.role, m.content) for m in gen.requests[-1].messages]
    assert roles == [
        ("system", "Be brief."),
        ("user", "second question"),
        ("assistant", "answer: second question"),
        ("user", "third question"),
    ]
    # another thread starts fresh
    other = Place(platform="slack", channel_id="C1", thread_id="1800.1", kind="thread")
    run(core.on_message(MessageEvent(place=other, author=ANN, text="new"), RecordingSink()))
    assert len(gen.requests[-1].messages) == 2


def test_redelivered_event_is_answered_once(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core = make_core(sessions, gen)
    outcomes = [say(core, "hello", event_id="Ev-dup")[1] for _ in range(4)]
    assert [o.duplicate for o in outcomes] == [False, True, True, True]  # type: ignore[attr-defined]
    assert len(gen.requests) == 1
    # a second core (another replica) on the same database agrees
    other = make_core(sessions, gen)
    assert say(other, "hello", event_id="Ev-dup")[1].duplicate  # type: ignore[attr-defined]
    with sessions() as s:
        assert len(s.scalars(select(Reply)).all()) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty"), ("   \n\t ", "empty"), ("\x00\x07\x1b[31m", "empty")],
)
def test_empty_message_gets_a_clear_reply(
    sessions: sessionmaker[Session], text: str, expected: str
) -> None:
    gen = ScriptedGenerator()
    sink, outcome = say(make_core(sessions, gen), text)
    assert not outcome.ok and expected in sink.notices[0]  # type: ignore[attr-defined]
    assert gen.requests == []


def test_oversized_message_is_refused_but_kept(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    big = "x" * 100_000
    sink, outcome = say(make_core(sessions, gen, max_message_chars=8000), big)
    assert not outcome.ok  # type: ignore[attr-defined]
    assert "100,000 characters" in sink.notices[0] and "8,000" in sink.notices[0]
    assert gen.requests == []
    with sessions() as s:
        (msg,) = s.scalars(select(Message)).all()
        assert msg.raw_text == big and msg.char_count == 100_000
        assert s.scalars(select(Reply)).all() == []


def test_broken_unicode_and_control_characters(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    text = (
        b"caf\xc3\xa9 \xff\xfe bad \x00bytes\x1b[2J".decode("utf-8", "surrogateescape") + "\ud800"
    )
    _sink, outcome = say(make_core(sessions, gen), text + " \udcff?")
    assert outcome.ok  # type: ignore[attr-defined]
    asked = gen.requests[0].messages[-1].content
    assert "\x00" not in asked and "\x1b" not in asked and "café" in asked
    asked.encode("utf-8")  # storable and sendable
    with sessions() as s:
        assert s.scalars(select(Message)).one().raw_text == asked


def test_generator_errors_become_notices(sessions: sessionmaker[Session]) -> None:
    busy = make_core(sessions, ScriptedGenerator(fail=EngineBusy("64 requests are waiting")))
    sink, outcome = say(busy, "hi")
    assert not outcome.ok and "busy" in sink.notices[0]  # type: ignore[attr-defined]
    broken = make_core(sessions, ScriptedGenerator(fail=ServingError("boom")))
    sink, outcome = say(broken, "hi again")
    assert not outcome.ok and "could not produce an answer" in sink.notices[0]  # type: ignore[attr-defined]
    # the messages are stored even though no reply came
    with sessions() as s:
        assert len(s.scalars(select(Message)).all()) == 2


def test_a_crashing_sink_does_not_crash_the_core(sessions: sessionmaker[Session]) -> None:
    class Exploding(RecordingSink):
        async def delta(self, text: str) -> None:
            raise RuntimeError("platform went away")

    sink = Exploding()
    outcome = run(
        make_core(sessions).on_message(MessageEvent(place=PLACE, author=ANN, text="q"), sink)
    )
    assert not outcome.ok and "went wrong" in sink.notices[0]


def _vote(
    core: Core, value: int, *, who: Person = ANN, reply_id: int | None = None, event_id: str = ""
) -> object:
    return run(
        core.on_vote(
            VoteEvent(
                ref=ReplyRef(place=PLACE, reply_id=reply_id),
                voter=who,
                value=value,
                source="button",
                event_id=event_id,
            )
        )
    )


def test_votes_last_wins_and_reference_styles(sessions: sessionmaker[Session]) -> None:
    core = make_core(sessions)
    _, outcome = say(core, "q")
    reply_id = outcome.reply_id  # type: ignore[attr-defined]
    assert _vote(core, 1).ok  # type: ignore[attr-defined]  # "last reply in this place"
    assert _vote(core, -1, reply_id=reply_id).ok  # type: ignore[attr-defined]
    by_platform_id = run(
        core.on_vote(
            VoteEvent(
                ref=ReplyRef(place=PLACE, platform_message_id="ts-1"),
                voter=STAFF,
                value=1,
                source="reaction",
            )
        )
    )
    assert by_platform_id.ok
    with sessions() as s:
        votes = {(f.user_id, f.value, f.source) for f in s.scalars(select(Feedback))}
        assert len(votes) == 2 and any(v == -1 for _, v, _ in votes)
    unknown = run(
        core.on_vote(
            VoteEvent(
                ref=ReplyRef(place=PLACE, platform_message_id="nope"),
                voter=ANN,
                value=1,
                source="reaction",
            )
        )
    )
    assert not unknown.ok and "not one of my answers" in unknown.text


def test_vote_with_nothing_to_vote_on(sessions: sessionmaker[Session]) -> None:
    outcome = _vote(make_core(sessions), 1)
    assert not outcome.ok and "ask me something first" in outcome.text  # type: ignore[attr-defined]


def test_flag_needs_staff(sessions: sessionmaker[Session]) -> None:
    core = make_core(sessions)
    say(core, "q")

    def flag(who: Person, correction: str | None = "the right answer") -> object:
        return run(
            core.on_flag(
                FlagEvent(
                    ref=ReplyRef(place=PLACE), flagger=who, reason="wrong", correction=correction
                )
            )
        )

    refused = flag(ANN)
    assert not refused.ok and "Only support staff" in refused.text  # type: ignore[attr-defined]
    assert flag(STAFF).ok  # type: ignore[attr-defined]
    assert flag(GROUPED).ok  # type: ignore[attr-defined]  # staff through a user group
    assert flag(MAINT).ok  # type: ignore[attr-defined]  # maintainers are staff too
    with sessions() as s:
        flags = s.scalars(select(Flag)).all()
        assert len(flags) == 3 and {f.corrected_text for f in flags} == {"the right answer"}
        roles = {u.external_id: u.role for u in s.scalars(select(User))}
        assert roles["USTAFF"] is Role.STAFF and roles["UMAINT"] is Role.MAINTAINER


def _command(core: Core, name: str, *args: str, who: Person = MAINT) -> object:
    return run(core.on_command(CommandEvent(place=PLACE, author=who, name=name, args=args)))


def test_maintainer_commands_and_refusals(sessions: sessionmaker[Session]) -> None:
    core = make_core(sessions)
    with transaction(sessions) as s:
        for v in ("v1", "v2"):
            Adapters(s).register(version=v, base_model="smol")
            Adapters(s).transition(v, AdapterStatus.CANDIDATE, actor="learning")
            Adapters(s).transition(v, AdapterStatus.PENDING, actor="learning")
    refused = _command(core, "approve", "v1", who=ANN)
    assert not refused.ok and "Only maintainers" in refused.text  # type: ignore[attr-defined]
    refused = _command(core, "approve", "v1", who=STAFF)
    assert not refused.ok  # type: ignore[attr-defined]
    assert "awaiting approval: v1, v2" in _command(core, "status").text  # type: ignore[attr-defined]
    assert _command(core, "approve", "v1").ok  # type: ignore[attr-defined]
    assert _command(core, "approve", "v2").ok  # type: ignore[attr-defined]
    listing = _command(core, "adapters").text  # type: ignore[attr-defined]
    assert "v1" in listing and "retired" in listing and "active" in listing
    rolled = _command(core, "rollback")
    assert rolled.ok and "now serving v1" in rolled.text  # type: ignore[attr-defined]
    bad = _command(core, "approve", "missing")
    assert not bad.ok and "does not exist" in bad.text  # type: ignore[attr-defined]
    usage = _command(core, "approve")
    assert not usage.ok and "Usage" in usage.text  # type: ignore[attr-defined]
    with sessions() as s:
        active = s.scalars(select(Adapter).filter_by(status=AdapterStatus.ACTIVE)).one()
        assert active.version == "v1"


def test_unknown_and_help_commands(sessions: sessionmaker[Session]) -> None:
    core = make_core(sessions)
    unknown = _command(core, "frobnicate", who=ANN)
    assert not unknown.ok and "Unknown command /frobnicate" in unknown.text  # type: ignore[attr-defined]
    assert "/up" in _command(core, "help", who=ANN).text  # type: ignore[attr-defined]


def test_logs_never_carry_message_text(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "my card is 4111 1111 1111 1111"
    with caplog.at_level(logging.DEBUG):
        say(make_core(sessions), secret, event_id="Ev-log")
    assert caplog.records, "the core should log what it does"
    for record in caplog.records:
        assert "4111" not in record.getMessage()
        assert all("4111" not in str(v) for v in vars(record).values())


def test_canary_command(sessions: sessionmaker[Session]) -> None:
    core = make_core(sessions)
    with transaction(sessions) as s:
        for v in ("c1", "c2"):
            Adapters(s).register(version=v, base_model="smol")
            Adapters(s).transition(v, AdapterStatus.CANDIDATE, actor="learning")
            Adapters(s).transition(v, AdapterStatus.PENDING, actor="learning")
    assert not _command(core, "canary", "c1", "10", who=STAFF).ok  # type: ignore[attr-defined]
    assert _command(core, "canary", "c1", "10%").ok  # type: ignore[attr-defined]
    assert "canary: c1 at 10%" in _command(core, "status").text  # type: ignore[attr-defined]
    second = _command(core, "canary", "c2", "5")
    assert not second.ok and "already the canary" in second.text  # type: ignore[attr-defined]
    assert not _command(core, "canary", "c1", "150").ok  # type: ignore[attr-defined]
    assert not _command(core, "canary", "c1", "lots").ok  # type: ignore[attr-defined]
    assert _command(core, "approve", "c1").ok  # type: ignore[attr-defined]
    with sessions() as s:
        row = s.scalars(select(Adapter).filter_by(version="c1")).one()
        assert row.canary_percent == 0.0  # leaving "pending" ends the canary


def test_rate_limit_keeps_the_message(sessions: sessionmaker[Session]) -> None:
    gen = ScriptedGenerator()
    core = make_core(sessions, gen, user_messages_per_minute=2)
    outcomes = [say(core, f"q{i}")[1] for i in range(3)]
    assert [o.ok for o in outcomes] == [True, True, False]  # type: ignore[attr-defined]
    assert "faster than I can answer" in outcomes[2].text  # type: ignore[attr-defined]
    assert say(core, "other user", who=STAFF)[1].ok  # type: ignore[attr-defined]
    assert len(gen.requests) == 3
    with sessions() as s:
        assert len(s.scalars(select(Message)).all()) == 4


def test_rate_limiter_window() -> None:
    from bot.core.ratelimit import RateLimiter

    now = [0.0]
    rl = RateLimiter(per_minute=2, clock=lambda: now[0])
    assert rl.check("a") == 0 and rl.check("a") == 0
    assert rl.check("a") == pytest.approx(60)
    now[0] = 30
    assert rl.check("a") == pytest.approx(30)
    now[0] = 60.5
    assert rl.check("a") == 0
    assert RateLimiter(per_minute=0).check("a") == 0


def test_a_caller_that_goes_away_cancels_its_generation(sessions: sessionmaker[Session]) -> None:
    """When the platform task is cancelled mid-reply, the engine is told to stop the work."""
    import asyncio

    from serving.types import GenerationRequest, ReplyStream

    class Endless(ScriptedGenerator):
        def __init__(self) -> None:
            super().__init__()
            self.streams: list[ReplyStream] = []

        def stream(self, request: GenerationRequest) -> ReplyStream:
            out = ReplyStream(asyncio.get_running_loop())
            out.push("partial ")  # and never finishes
            self.streams.append(out)
            return out

    gen = Endless()
    core = make_core(sessions, gen)

    async def go() -> RecordingSink:
        sink = RecordingSink()
        task = asyncio.ensure_future(
            core.on_message(MessageEvent(place=PLACE, author=ANN, text="hello?"), sink)
        )
        while not sink.deltas:  # noqa: ASYNC110 - the core streams into the sink
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sink

    sink = run(go())
    assert sink.deltas == ["partial "] and sink.finals == []
    (stream,) = gen.streams
    assert stream.cancelled
    with sessions() as s:  # the question is kept even though no reply was made
        assert s.scalars(select(Message)).one().raw_text == "hello?"
        assert s.scalars(select(Reply)).all() == []
