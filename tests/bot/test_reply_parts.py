"""A reply posted as several platform messages is one reply: a vote, reaction or flag
on any part reaches it, on Slack and on Discord, after a restart too.

The core keeps every part's platform id in storage (``reply_parts``); no platform
keeps a map of its own. Slack and Discord run end to end against their local fakes
(tests/fakes) with the real core, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, MessageEvent, Person, Place, RolePolicy, VoteEvent
from bot.core.events import FlagEvent, ReplyRef
from bot.platforms.discord.split import MESSAGE_LIMIT
from bot.platforms.slack import blocks as ui
from storage.db import make_engine, session_factory
from storage.models import Feedback, Flag, Reply
from storage.repositories import ReplyParts
from tests.bot.fakes import RecordingSink, ScriptedGenerator
from tests.bot.platforms import test_discord as dc
from tests.bot.platforms import test_slack as sl
from tests.conftest import run
from tests.fakes.discord_fake import reaction_add
from tests.fakes.slack_api import DEFAULT_CHANNEL_ID, reaction_added_event

SENTENCE = "Chatloop keeps every answer traceable to the adapter that wrote it. "
LONG_ANSWER = (SENTENCE * 100)[:5999].rstrip() + "."
assert len(LONG_ANSWER) >= 5990


def votes(sessions: sessionmaker[Session]) -> list[tuple[int, int, str]]:
    with sessions() as s:
        rows = s.scalars(select(Feedback).order_by(Feedback.value))
        return [(f.reply_id, f.value, f.source) for f in rows]


def parts_of(sessions: sessionmaker[Session], reply_id: int) -> list[tuple[int, str, str]]:
    with sessions() as s:
        return [
            (p.part_index, p.channel_id, p.platform_message_id)
            for p in ReplyParts(s).of_reply(reply_id)
        ]


# -- the core ------------------------------------------------------------------------------
PLACE = Place(platform="slack", channel_id="C1", thread_id="1.0", kind="thread")
ANN = Person(user_id="UANN")
BEA = Person(user_id="UBEA")
STAFF = Person(user_id="USTAFF")


@dataclass
class PartsSink(RecordingSink):
    """A sink that posted the reply as several messages."""

    parts: list[str] = field(default_factory=list)

    async def done(self, text: str, *, reply_id: int, note: str = "") -> Sequence[str]:
        await super().done(text, reply_id=reply_id, note=note)
        return list(self.parts)


def test_the_core_resolves_votes_and_flags_on_any_part(sessions: sessionmaker[Session]) -> None:
    core = Core(
        generator=ScriptedGenerator(),
        sessions=sessions,
        roles=RolePolicy(staff=["slack:USTAFF"]),
        config=CoreConfig(system_prompt="Be brief."),
    )
    sink = PartsSink(parts=["1.1", "1.2", "1.3"])
    outcome = run(core.on_message(MessageEvent(place=PLACE, author=ANN, text="q"), sink))
    reply_id = outcome.reply_id
    assert reply_id is not None
    assert parts_of(sessions, reply_id) == [(0, "C1", "1.1"), (1, "C1", "1.2"), (2, "C1", "1.3")]
    with sessions() as s:  # the part with the buttons, as the one id was before
        assert s.get(Reply, reply_id).platform_message_id == "1.3"  # type: ignore[union-attr]

    def vote(person: Person, ts: str, value: int) -> bool:
        ref = ReplyRef(place=PLACE, platform_message_id=ts)
        event = VoteEvent(ref=ref, voter=person, value=value, source="reaction")
        return run(core.on_vote(event)).ok

    assert vote(ANN, "1.1", 1) and vote(BEA, "1.3", -1)
    assert votes(sessions) == [(reply_id, -1, "reaction"), (reply_id, 1, "reaction")]
    flag = FlagEvent(
        ref=ReplyRef(place=PLACE, platform_message_id="1.2"),
        flagger=STAFF,
        reason="wrong",
        correction="The right answer.",
    )
    assert run(core.on_flag(flag)).reply_id == reply_id
    with sessions() as s:
        assert [(f.reply_id, f.corrected_text) for f in s.scalars(select(Flag))] == [
            (reply_id, "The right answer.")
        ]
    assert run(core.find_reply(PLACE, "1.2")) == reply_id
    assert run(core.find_reply(PLACE, "9.9")) is None
    # a message that is no part of a reply is refused in words, not dropped
    refused = run(
        core.on_vote(
            VoteEvent(
                ref=ReplyRef(place=PLACE, platform_message_id="9.9"),
                voter=ANN,
                value=1,
                source="reaction",
            )
        )
    )
    assert not refused.ok and "not one of my answers" in refused.text


def test_a_sink_with_one_message_or_none(sessions: sessionmaker[Session]) -> None:
    core = Core(
        generator=ScriptedGenerator(),
        sessions=sessions,
        roles=RolePolicy(),
        config=CoreConfig(system_prompt="Be brief."),
    )

    def ask(text: str, sink: RecordingSink) -> int:
        outcome = run(core.on_message(MessageEvent(place=PLACE, author=ANN, text=text), sink))
        assert outcome.reply_id is not None
        return outcome.reply_id

    assert parts_of(sessions, ask("a", RecordingSink(platform_id="7.7"))) == [(0, "C1", "7.7")]
    assert parts_of(sessions, ask("b", RecordingSink())) == []  # the terminal posts nothing


# -- Slack ---------------------------------------------------------------------------------
def test_slack_votes_on_the_first_and_last_part_reach_the_one_reply(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        generator = sl.LongGenerator(LONG_ANSWER)
        async with sl.slack_bot(sessions, generator=generator, edit_interval=0.0) as bot:
            mention = await bot.ask("tell me everything")
            posted = bot.bot_messages(thread_ts=mention["ts"])
            assert len(posted) == 3  # 6,000 characters at 2,900 per part
            assert all(len(t) <= ui.PART_CHARS for m in posted for t in sl.section_texts(m))
            reply = sl.one_reply(sessions)
            assert parts_of(sessions, reply.id) == [
                (i, DEFAULT_CHANNEL_ID, m["ts"]) for i, m in enumerate(posted)
            ]
            first = reaction_added_event("+1", item_ts=posted[0]["ts"], user="U0000ANN1")
            last = reaction_added_event("-1", item_ts=posted[-1]["ts"], user="U0000BEA1")
            assert await bot.event(first) == 200 and await bot.event(last) == 200
            await bot.settle()
            assert votes(sessions) == [(reply.id, -1, "reaction"), (reply.id, 1, "reaction")]

    run(go())


# -- Discord -------------------------------------------------------------------------------
def test_discord_votes_on_the_first_and_last_part_after_a_restart(
    sessions: sessionmaker[Session], db_url: str
) -> None:
    async def go() -> None:
        async with dc.discord_bot(sessions, dc.LongGenerator(LONG_ANSWER)) as bot:
            fake = bot.fake
            thread = (await dc.mention(bot, "Explain everything"))["id"]
            (carrier,) = await dc.wait_finals(fake, thread)
            posted = fake.bot_messages(thread)
            assert len(posted) >= 3 and posted[-1]["id"] == carrier["id"]
            assert all(len(p["content"]) <= MESSAGE_LIMIT for p in posted)
            reply_id = dc.reply_id_of(carrier)
            await dc.eventually(lambda: parts_of(sessions, reply_id), "the stored parts")
            assert parts_of(sessions, reply_id) == [
                (i, thread, p["id"]) for i, p in enumerate(posted)
            ]

            # a new process: new core, new adapter, a new engine on the same database
            await bot.adapter.close()
            engine = make_engine(db_url)
            try:
                bot.core = dc.make_core(session_factory(engine), bot.gen)
                bot.adapter = dc.make_adapter(bot.core, fake)
                await bot.adapter.start(ready_timeout_s=dc.WAIT)
                up = reaction_add("👍", message_id=posted[0]["id"], channel_id=thread)
                down = reaction_add(
                    "👎", message_id=posted[-1]["id"], channel_id=thread, user=dc.SAM
                )
                await fake.dispatch("MESSAGE_REACTION_ADD", up)
                await fake.dispatch("MESSAGE_REACTION_ADD", down)
                await dc.eventually(lambda: len(votes(sessions)) == 2, "both votes")
                assert votes(sessions) == [(reply_id, -1, "reaction"), (reply_id, 1, "reaction")]
                # the flag menu asks the core which reply a part is
                place = Place(platform="discord", channel_id=thread, kind="thread")
                assert await bot.core.find_reply(place, posted[0]["id"]) == reply_id
            finally:
                await bot.adapter.close()
                engine.dispose()

    dc.run_bounded(go())
