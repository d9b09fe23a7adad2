"""The Discord adapter end to end: the real discord.py client on a local fake Discord.

Each test starts the fake Discord (REST v10 + gateway, tests/fakes/discord_fake.py) on a
free port, points discord.py at it, and runs the real :class:`DiscordAdapter` with the
real core on SQLite and PostgreSQL; only the model is scripted (tests/bot/fakes.py).
Events go in as gateway dispatches (MESSAGE_CREATE, MESSAGE_REACTION_ADD,
INTERACTION_CREATE, ...); what the bot did is read from the fake's REST log, its message
store and the database.

One local addition to the fake (``ThreadingFake``): the shared fake does not model
threads, so starting a thread from a message (``POST .../messages/{id}/threads``, which
answers with the thread and dispatches THREAD_CREATE), ``GET /channels/{thread}``, and
an interaction's ``channel`` describing the thread it came from are added here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import discord
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, RolePolicy
from bot.platforms.discord import DiscordAdapter, DiscordAdapterError, intents
from bot.platforms.discord.client import PAYLOAD_LOGGERS
from bot.platforms.discord.commands import sync_commands
from bot.platforms.discord.sink import EditPacer
from bot.platforms.discord.split import open_fence, split_message, utf16_len
from serving.types import GenerationRequest, GenerationResult, ReplyStream
from storage.db import transaction
from storage.models import (
    Adapter,
    AdapterStatus,
    AuditEntry,
    Conversation,
    Feedback,
    Flag,
    Message,
    Reply,
)
from storage.repositories import Adapters
from tests.bot.fakes import ScriptedGenerator
from tests.conftest import run
from tests.fakes.discord_fake import (
    API_VERSION,
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_DM_CHANNEL_ID,
    DEFAULT_GUILD_ID,
    DEFAULT_USER_ID,
    FakeDiscord,
    Intents,
    dm_message_create,
    guild_payload,
    interaction_app_command,
    interaction_component,
    interaction_message_context_menu,
    interaction_modal_submit,
    member_payload,
    message_create,
    reaction_add,
    role_payload,
    text_channel_payload,
    user_payload,
)

JSON = dict[str, Any]
T = TypeVar("T")

BOT = DEFAULT_BOT_USER_ID
GUILD = DEFAULT_GUILD_ID
GENERAL = DEFAULT_CHANNEL_ID
MAINTAINERS = "1100000000000000201"
RANDOM = "1100000000000000202"  # a channel outside the channel allow-list
OTHER_GUILD = "1100000000000000110"  # a server outside the guild allow-list
OTHER_CHANNEL = "1100000000000000210"
STAFF_ROLE = "1100000000000000500"
ALICE = user_payload(DEFAULT_USER_ID, "alice")
SAM = user_payload("1100000000000000301", "sam")  # support staff through a role
MAX = user_payload("1100000000000000302", "max")  # maintainer by user id
WAIT = 10.0


# -- the fake, plus threads ---------------------------------------------------------------
class ThreadingFake(FakeDiscord):
    """The shared fake plus "start a thread from a message" (it does not model threads)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.threads: dict[str, JSON] = {}

    def _add_routes(self, app: web.Application) -> None:
        super()._add_routes(app)
        path = f"/api/v{API_VERSION}/channels/{{channel_id}}/messages/{{message_id}}/threads"
        app.router.add_route("POST", path, self._wrap(self._r_start_thread))

    def _channel(self, channel_id: str) -> tuple[JSON, str | None] | None:
        thread = self.threads.get(channel_id)
        if thread is not None:
            return dict(thread), thread["guild_id"]
        return super()._channel(channel_id)

    def _observe(self, event: str, data: JSON) -> None:
        super()._observe(event, data)
        # Discord sends an interaction's channel as it is: a thread comes with its type
        # and parent (the shared builders always describe a text channel)
        thread = self.threads.get(str(data.get("channel_id")))
        if event == "INTERACTION_CREATE" and thread is not None and "guild_id" in data:
            data["channel"] = dict(thread)

    async def _r_start_thread(self, request: web.Request, body: Any) -> web.StreamResponse:
        channel_id, message_id = request.match_info["channel_id"], request.match_info["message_id"]
        found = super()._channel(channel_id)
        if found is None or found[1] is None:
            return self._error(404, 10003, "Unknown Channel")
        if message_id in self.threads:
            return self._error(400, 160004, "A thread has already been created for this message")
        now = datetime.now(UTC).isoformat()
        thread: JSON = {
            "id": message_id,  # Discord: a thread started from a message has its id
            "type": 11,
            "guild_id": found[1],
            "parent_id": channel_id,
            "owner_id": self.bot_user["id"],
            "name": str((body or {}).get("name", "")),
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
            },
            "member": {
                "id": message_id,
                "user_id": self.bot_user["id"],
                "join_timestamp": now,
                "flags": 0,
            },
        }
        self.threads[message_id] = thread
        await self._dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return self._json(thread, status=201)


def make_guild() -> JSON:
    return guild_payload(
        channels=[
            text_channel_payload(GENERAL, "general"),
            text_channel_payload(MAINTAINERS, "maintainers", position=1),
            text_channel_payload(RANDOM, "random", position=2),
        ],
        members=[
            member_payload(ALICE),
            member_payload(SAM, roles=[STAFF_ROLE]),
            member_payload(MAX),
            member_payload(user_payload(BOT, "fakebot", bot=True)),
        ],
        roles=[role_payload(GUILD, "@everyone"), role_payload(STAFF_ROLE, "support", position=1)],
    )


def other_guild() -> JSON:
    """A second server the bot is in (for the guild allow-list)."""
    return guild_payload(
        OTHER_GUILD,
        "Elsewhere",
        channels=[text_channel_payload(OTHER_CHANNEL, "elsewhere", guild_id=OTHER_GUILD)],
        members=[
            member_payload(ALICE),
            member_payload(SAM, roles=[STAFF_ROLE]),
            member_payload(MAX),
            member_payload(user_payload(BOT, "fakebot", bot=True)),
        ],
        roles=[role_payload(OTHER_GUILD, "@everyone")],
    )


# -- a generator that writes long answers --------------------------------------------------
class LongGenerator(ScriptedGenerator):
    """Streams ``text`` in 100-character deltas, whatever the question."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def stream(self, request: GenerationRequest) -> ReplyStream:
        self.requests.append(request)
        out = ReplyStream(asyncio.get_running_loop())
        for i in range(0, len(self.text), 100):
            out.push(self.text[i : i + 100])
        out.finish(
            GenerationResult(
                text=self.text,
                finish_reason="length",
                prompt_tokens=10,
                completion_tokens=800,
                latency_ms=5.0,
                ttft_ms=1.0,
                adapter_version="base",
                model_id=self.model_id,
                replica_id="replica-test",
            )
        )
        return out


# -- harness ---------------------------------------------------------------------------------
@dataclass
class Bot:
    fake: ThreadingFake
    adapter: DiscordAdapter
    core: Core
    gen: ScriptedGenerator
    sessions: sessionmaker[Session]


def make_core(
    sessions: sessionmaker[Session], gen: ScriptedGenerator, *, per_minute: int = 0
) -> Core:
    return Core(
        generator=gen,
        sessions=sessions,
        roles=RolePolicy(
            staff=[f"discord-role:{STAFF_ROLE}"], maintainers=[f"discord:{MAX['id']}"]
        ),
        config=CoreConfig(system_prompt="Be brief.", user_messages_per_minute=per_minute),
    )


def make_adapter(core: Core, fake: FakeDiscord, **options: Any) -> DiscordAdapter:
    return DiscordAdapter(
        core=core,
        token=fake.token,
        maintainers_channel=MAINTAINERS,
        guild_ready_timeout_s=0.05,
        **options,
    )


@asynccontextmanager
async def discord_bot(
    sessions: sessionmaker[Session],
    gen: ScriptedGenerator | None = None,
    *,
    guilds: tuple[JSON, ...] = (),
    per_minute: int = 0,
    disallowed_intents: int = 0,
    **options: Any,
) -> AsyncIterator[Bot]:
    gen = gen or ScriptedGenerator()
    fake_discord = ThreadingFake(
        guilds=[make_guild(), *guilds], disallowed_intents=disallowed_intents
    )
    async with fake_discord as fake:
        with fake.patch_discord():
            core = make_core(sessions, gen, per_minute=per_minute)
            adapter = make_adapter(core, fake, **options)
            bot = Bot(fake, adapter, core, gen, sessions)
            try:
                await adapter.start(ready_timeout_s=WAIT)
                yield bot
            finally:
                await bot.adapter.close()  # the one running now (a test may restart it)


async def restart(bot: Bot, **options: Any) -> None:
    """A new adapter process on the same core and fake (nothing kept in memory)."""
    await bot.adapter.close()
    bot.adapter = make_adapter(bot.core, bot.fake, **options)
    await bot.adapter.start(ready_timeout_s=WAIT)


def run_bounded(coro: Any, timeout: float = 45.0) -> Any:
    return run(asyncio.wait_for(coro, timeout))


async def eventually(check: Callable[[], T | None], what: str, within_s: float = WAIT) -> T:
    """Poll ``check`` until it returns something truthy (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"waited {within_s:g} s for {what}")
        await asyncio.sleep(0.02)


def custom_ids(message: Mapping[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(component: Mapping[str, Any]) -> None:
        if component.get("custom_id"):
            found.append(component["custom_id"])
        for child in component.get("components", []):
            walk(child)
        if "component" in component:
            walk(component["component"])

    for component in message.get("components", []):
        walk(component)
    return found


def finals(fake: FakeDiscord, channel_id: str) -> list[JSON]:
    """The bot's messages in a channel that carry the 👍/👎 buttons (finished replies)."""
    return [m for m in fake.bot_messages(channel_id) if any("vote" in c for c in custom_ids(m))]


async def wait_finals(fake: FakeDiscord, channel_id: str, count: int = 1) -> list[JSON]:
    return await eventually(
        lambda: (found := finals(fake, channel_id)) and len(found) >= count and found,
        f"{count} finished replies in {channel_id}",
    )


async def mention(bot: Bot, text: str, **options: Any) -> JSON:
    payload = message_create(f"<@{BOT}> {text}", **options)
    await bot.fake.dispatch("MESSAGE_CREATE", payload)
    return payload


async def interact(bot: Bot, payload: JSON) -> JSON:
    """Dispatch an INTERACTION_CREATE and return the bot's (first) callback to it."""
    await bot.fake.dispatch("INTERACTION_CREATE", payload)
    responses = await eventually(
        lambda: bot.fake.interaction_responses(payload["id"]), f"an answer to {payload['id']}"
    )
    return responses[0]


def with_roles(payload: JSON, *roles: str) -> JSON:
    payload["member"]["roles"] = list(roles)
    return payload


def is_ephemeral(response: Mapping[str, Any]) -> bool:
    return response["type"] == 4 and bool(int(response["data"].get("flags") or 0) & 64)


def reaction_remove(emoji: str, *, message_id: str, channel_id: str, user: JSON) -> JSON:
    # the shared fake has reaction_add(); a removal carries no member and no author id
    return {
        "user_id": user["id"],
        "channel_id": channel_id,
        "message_id": message_id,
        "emoji": {"id": None, "name": emoji},
        "burst": False,
        "type": 0,
        "guild_id": GUILD,
    }


def reply_id_of(message: Mapping[str, Any]) -> int:
    up = next(c for c in custom_ids(message) if c.startswith("chatloop:vote:up:"))
    return int(up.rsplit(":", 1)[1])


async def stored_message_id(sessions: sessionmaker[Session], reply_id: int) -> str:
    """The platform message id the core stored for a reply (it is stored after the post)."""

    def check() -> str | None:
        with sessions() as s:
            reply = s.get(Reply, reply_id)
            return reply.platform_message_id if reply is not None else None

    return await eventually(check, f"the message id of reply {reply_id}")


def feedback(sessions: sessionmaker[Session]) -> list[tuple[int, int, str, str | None]]:
    with sessions() as s:
        return [(f.reply_id, f.value, f.source, f.reason) for f in s.scalars(select(Feedback))]


# -- conversations -------------------------------------------------------------------------
def test_mention_opens_a_thread_and_streams_the_reply(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            question = await mention(bot, "How do I reset my password?")
            thread = question["id"]
            (final,) = await wait_finals(fake, thread)
            answer = "answer: How do I reset my password?"
            assert final["content"] == answer
            reply_id = reply_id_of(final)
            assert custom_ids(final) == [
                f"chatloop:vote:up:{reply_id}",
                f"chatloop:vote:down:{reply_id}",
            ]
            (started,) = fake.requests("POST", f"/channels/{GENERAL}/messages/{thread}/threads")
            assert started.json["name"] == "How do I reset my password?"
            assert fake.requests("POST", f"/channels/{thread}/typing")
            # sent on the first delta (no buttons yet), then edited to the final text
            (post,) = fake.requests("POST", f"/channels/{thread}/messages")
            assert answer.startswith(post.json["content"]) and post.json["content"] != answer
            assert not post.json.get("components")
            assert post.json["allowed_mentions"]["parse"] == []  # model output never pings
            edits = fake.requests("PATCH", f"/channels/{thread}/messages/{final['id']}")
            assert edits and edits[-1].json["content"] == answer
            assert edits[-1].json["components"]
            assert fake.bot_messages(GENERAL) == []  # nothing in the channel itself

            # a follow-up in the thread needs no mention and carries the context
            await fake.dispatch(
                "MESSAGE_CREATE", message_create("And on mobile?", channel_id=thread)
            )
            await wait_finals(fake, thread, 2)
            history = [(m.role, m.content) for m in bot.gen.requests[-1].messages]
            assert history[1:] == [
                ("user", "How do I reset my password?"),
                ("assistant", answer),
                ("user", "And on mobile?"),
            ]
            # a channel message without a mention is not for the bot
            await fake.dispatch("MESSAGE_CREATE", message_create("lunch anyone?"))
            await fake.dispatch("MESSAGE_CREATE", dm_message_create("ping"))
            await wait_finals(fake, DEFAULT_DM_CHANNEL_ID)
            assert len(bot.gen.requests) == 3
            assert fake.bot_messages(GENERAL) == []

            assert await stored_message_id(sessions, reply_id) == final["id"]
        with sessions() as s:
            first = s.scalars(select(Message).order_by(Message.id)).first()
            assert first is not None and first.raw_text == "How do I reset my password?"
            assert first.platform_message_id == thread
            kinds = {
                (c.channel_id, c.thread_id, c.kind.value) for c in s.scalars(select(Conversation))
            }
            assert kinds == {(thread, thread, "thread"), (DEFAULT_DM_CHANNEL_ID, "", "dm")}

    run_bounded(go())


def test_direct_messages_are_answered(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            await bot.fake.dispatch("MESSAGE_CREATE", dm_message_create("hello there"))
            (final,) = await wait_finals(bot.fake, DEFAULT_DM_CHANNEL_ID)
            assert final["content"] == "answer: hello there"
            # a 👍 reaction in the DM counts as a vote (dm_reactions intent)
            await bot.fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add(
                    "👍", message_id=final["id"], channel_id=DEFAULT_DM_CHANNEL_ID, guild_id=None
                ),
            )
            await eventually(lambda: feedback(sessions), "the DM vote")
            assert feedback(sessions) == [(reply_id_of(final), 1, "reaction", None)]

    run_bounded(go())


def test_mentions_and_dms_work_without_the_message_content_intent(
    sessions: sessionmaker[Session],
) -> None:
    """Not listening in channels: no privileged intent (the app may not even have it);
    mentions, in a channel or a thread, and DMs are answered; other thread messages
    are not."""

    async def go() -> None:
        async with discord_bot(
            sessions, listen_in_channels=False, disallowed_intents=Intents.MESSAGE_CONTENT
        ) as bot:
            fake = bot.fake
            assert not bot.adapter.client.intents.message_content
            thread = (await mention(bot, "How do I reset my password?"))["id"]
            await wait_finals(fake, thread)
            await fake.dispatch(
                "MESSAGE_CREATE", message_create("And on mobile?", channel_id=thread)
            )
            await mention(bot, "and on the web?", channel_id=thread)
            await wait_finals(fake, thread, 2)
            await fake.dispatch("MESSAGE_CREATE", dm_message_create("hello there"))
            (dm,) = await wait_finals(fake, DEFAULT_DM_CHANNEL_ID)
            assert dm["content"] == "answer: hello there"
            assert [r.messages[-1].content for r in bot.gen.requests] == [
                "How do I reset my password?",
                "and on the web?",
                "hello there",
            ]

    run_bounded(go())


# -- feedback ---------------------------------------------------------------------------------
def test_buttons_reactions_and_the_reason_form(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            thread = (await mention(bot, "Where is the invoice?"))["id"]
            (final,) = await wait_finals(fake, thread)
            reply_id = reply_id_of(final)

            # 👍 button: recorded, acknowledged only to the voter
            click = interaction_component(f"chatloop:vote:up:{reply_id}", message=final)
            answer = await interact(bot, click)
            assert is_ephemeral(answer) and "Thanks for the feedback" in answer["data"]["content"]
            assert feedback(sessions) == [(reply_id, 1, "button", None)]

            # 👎 reaction replaces it; removing the reaction retracts (0)
            down = reaction_add("👎", message_id=final["id"], channel_id=thread)
            await fake.dispatch("MESSAGE_REACTION_ADD", down)
            await eventually(lambda: feedback(sessions)[0][1] == -1, "the reaction vote")
            assert feedback(sessions) == [(reply_id, -1, "reaction", None)]
            removed = reaction_remove("👎", message_id=final["id"], channel_id=thread, user=ALICE)
            await fake.dispatch("MESSAGE_REACTION_REMOVE", removed)
            await eventually(lambda: feedback(sessions)[0][1] == 0, "the retraction")
            # reactions that are not votes, or on messages that are not replies, are ignored
            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add("🎉", message_id=final["id"], channel_id=thread),
            )
            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add(
                    "👍", message_id=thread, channel_id=GENERAL, message_author_id=ALICE["id"]
                ),
            )

            # 👎 button: the vote counts at once, and a form asks why
            click = interaction_component(f"chatloop:vote:down:{reply_id}", message=final)
            form = await interact(bot, click)
            assert form["type"] == 9  # MODAL
            await eventually(lambda: feedback(sessions)[0][1:3] == (-1, "button"), "the 👎 click")
            (reason_input,) = custom_ids(form["data"])
            submit = interaction_modal_submit(
                form["data"]["custom_id"], {reason_input: "It is outdated"}, channel_id=thread
            )
            thanks = await interact(bot, submit)
            assert is_ephemeral(thanks) and "noted" in thanks["data"]["content"]
            assert feedback(sessions) == [(reply_id, -1, "button", "It is outdated")]

    run_bounded(go())


def test_a_long_reply_is_split_and_every_part_counts(sessions: sessionmaker[Session]) -> None:
    sentence = "Open the settings page and choose the security tab to continue. "
    code = (
        "```python\n"
        + "".join(f"step_{i} = configure(option={i})\n" for i in range(14))
        + "```\n\n"
    )
    body = ((sentence * 29).strip() + "\n\n" + code + sentence * 60)[:3990].rsplit(" ", 1)[0]
    text = body + " " + "z" * (4000 - len(body) - 2) + "."
    assert len(text) == 4000

    async def go() -> None:
        async with discord_bot(sessions, LongGenerator(text)) as bot:
            fake = bot.fake
            thread = (await mention(bot, "Explain everything"))["id"]
            (carrier,) = await wait_finals(fake, thread)
            parts = fake.bot_messages(thread)
            assert len(parts) >= 3 and parts[-1]["id"] == carrier["id"]
            contents = [p["content"] for p in parts]
            assert contents == split_message(text)
            assert all(utf16_len(c) <= 2000 for c in contents)
            assert all(open_fence(c) is None for c in contents)  # fences closed per part
            assert all(not p["components"] for p in parts[:-1])  # buttons on the last only
            words = set(text.split())
            for content in contents:  # never cut inside a word
                assert set(content.replace("```python", " ").replace("```", " ").split()) <= words
            reply_id = reply_id_of(carrier)
            assert await stored_message_id(sessions, reply_id) == carrier["id"]
            with sessions() as s:
                reply = s.get(Reply, reply_id)
                assert reply is not None and reply.text == text
            # a reaction on the first part votes on the whole reply
            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add("👍", message_id=parts[0]["id"], channel_id=thread),
            )
            await eventually(lambda: feedback(sessions), "the vote on part 1")
            assert feedback(sessions) == [(reply_id, 1, "reaction", None)]

            # after a restart (nothing in memory) parts and buttons still lead to the reply
            await bot.adapter.close()
            bot.adapter = make_adapter(bot.core, fake)
            await bot.adapter.start(ready_timeout_s=WAIT)
            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add("👎", message_id=parts[1]["id"], channel_id=thread, user=SAM),
            )
            await eventually(lambda: len(feedback(sessions)) == 2, "the vote after a restart")
            click = interaction_component(f"chatloop:vote:up:{reply_id}", message=carrier, user=SAM)
            assert is_ephemeral(await interact(bot, click))
            await eventually(
                lambda: (
                    sorted(feedback(sessions))
                    == [(reply_id, 1, "button", None), (reply_id, 1, "reaction", None)]
                ),
                "the button vote after a restart",
            )

    run_bounded(go())


# -- staff -------------------------------------------------------------------------------------
def test_staff_flag_and_correct(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            question = await mention(bot, "What is the refund window?")
            thread = question["id"]
            (final,) = await wait_finals(fake, thread)
            reply_id = reply_id_of(final)

            # a customer is refused with the core's words; nothing is recorded
            refused = await interact(
                bot, interaction_message_context_menu("Flag and correct", target=final)
            )
            assert is_ephemeral(refused)
            assert refused["data"]["content"] == "Only support staff can flag and correct answers."
            # a message that is not a reply of the bot
            own = await interact(
                bot,
                with_roles(
                    interaction_message_context_menu("Flag and correct", target=question, user=SAM),
                    STAFF_ROLE,
                ),
            )
            assert "not one of my answers" in own["data"]["content"]

            # staff (by role): the form, then the flag with the correction
            menu = with_roles(
                interaction_message_context_menu("Flag and correct", target=final, user=SAM),
                STAFF_ROLE,
            )
            form = await interact(bot, menu)
            assert form["type"] == 9
            reason_id, correction_id = custom_ids(form["data"])
            submit = with_roles(
                interaction_modal_submit(
                    form["data"]["custom_id"],
                    {reason_id: "outdated", correction_id: "30 days from delivery."},
                    user=SAM,
                    channel_id=thread,
                ),
                STAFF_ROLE,
            )
            done = await interact(bot, submit)
            assert is_ephemeral(done) and "Flagged" in done["data"]["content"]
        with sessions() as s:
            (flag,) = s.scalars(select(Flag)).all()
            assert (flag.reply_id, flag.reason, flag.corrected_text) == (
                reply_id,
                "outdated",
                "30 days from delivery.",
            )

    run_bounded(go())


# -- maintainers -------------------------------------------------------------------------------
def chatloop_command(
    name: str,
    user: JSON,
    *,
    channel_id: str | None = None,
    guild_id: str | None = GUILD,
    **options: Any,
) -> JSON:
    """``/<name> option:value ...``: the app commands are top-level, generated from the table."""
    opts = [
        {"name": k, "type": 10 if isinstance(v, float) else 3, "value": v}
        for k, v in options.items()
    ]
    return interaction_app_command(name, opts, user=user, channel_id=channel_id, guild_id=guild_id)


MAINTAINER_COMMANDS = {"status", "adapters", "approve", "reject", "rollback", "canary"}


def pending(sessions: sessionmaker[Session], *versions: str) -> None:
    with transaction(sessions) as s:
        for v in versions:
            Adapters(s).register(version=v, base_model="smol")
            Adapters(s).transition(v, AdapterStatus.CANDIDATE, actor="learning")
            Adapters(s).transition(v, AdapterStatus.PENDING, actor="learning")


def registry(sessions: sessionmaker[Session]) -> dict[str, tuple[str, float]]:
    """version -> (status, canary percent), as the registry has them."""
    with sessions() as s:
        return {a.version: (a.status.value, a.canary_percent) for a in s.scalars(select(Adapter))}


def test_maintainer_commands_and_approval_requests(sessions: sessionmaker[Session]) -> None:
    pending(sessions, "v1", "v2", "v3")

    def active() -> list[str]:
        with sessions() as s:
            return [
                a.version for a in s.scalars(select(Adapter).filter_by(status=AdapterStatus.ACTIVE))
            ]

    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            # starting registers nothing: `chatloop discord sync` does, once (globally here)
            assert fake.requests("PUT", "/applications/{application_id}/commands") == []
            synced = await sync_commands(token=fake.token)
            registered = {c["name"]: c for c in fake.commands(None)}
            assert (
                set(registered)
                == set(synced)
                == {
                    *MAINTAINER_COMMANDS,
                    "memory",
                    "help",
                    "Flag and correct",
                }
            )
            for name, command in registered.items():  # a hint to Discord: Manage Server
                wanted = discord.Permissions(manage_guild=True).value
                perms = command.get("default_member_permissions")
                assert (None if perms is None else int(perms)) == (
                    wanted if name in MAINTAINER_COMMANDS else None
                ), name
            subs = {o["name"] for o in registered["memory"]["options"]}
            assert subs == {"list", "search", "show", "add", "edit", "retire"}

            refused = await interact(bot, chatloop_command("approve", ALICE, version="v1"))
            assert is_ephemeral(refused)
            assert refused["data"]["content"] == "Only maintainers can use /approve."
            approved = await interact(bot, chatloop_command("approve", MAX, version="v1"))
            assert is_ephemeral(approved) and "v1 approved" in approved["data"]["content"]
            assert active() == ["v1"]
            status = await interact(bot, chatloop_command("status", MAX))
            assert "awaiting approval: v2, v3" in status["data"]["content"]

            # an approval request with buttons in the maintainers channel
            message_id = await bot.adapter.post_approval_request("v2", "win rate 0.61 vs v1")
            (request,) = [m for m in fake.bot_messages(MAINTAINERS) if m["id"] == message_id]
            assert "win rate 0.61" in request["content"]
            assert custom_ids(request) == ["chatloop:approve:v2", "chatloop:reject:v2"]
            click = interaction_component("chatloop:approve:v2", message=request)
            assert "Only maintainers" in (await interact(bot, click))["data"]["content"]
            click = interaction_component("chatloop:approve:v2", message=request, user=MAX)
            assert "v2 approved" in (await interact(bot, click))["data"]["content"]
            (updated,) = await eventually(
                lambda: [
                    m
                    for m in fake.bot_messages(MAINTAINERS)
                    if m["id"] == message_id and not m["components"]
                ],
                "the approval request without buttons",
            )
            assert "v2 approved" in updated["content"] and f"<@{MAX['id']}>" in updated["content"]
            assert active() == ["v2"]

            rolled = await interact(bot, chatloop_command("rollback", MAX))
            assert "now serving v1" in rolled["data"]["content"]
            assert active() == ["v1"]
            # a canary needs an adapter that awaits approval: v3 (v2 is retired now)
            canary = await interact(bot, chatloop_command("canary", MAX, version="v3", percent=5.0))
            assert is_ephemeral(canary)
            assert canary["data"]["content"] == "🐤 v3 now answers 5% of conversations."
            assert registry(sessions)["v3"] == ("pending", 5.0)

    run_bounded(go())


def test_chatloop_discord_sync_registers_the_commands_per_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real command line against the fake: commands per server, nothing global."""
    from typer.testing import CliRunner

    from chatloop.cli import app

    async def go() -> None:
        async with ThreadingFake(guilds=[make_guild()]) as fake:
            with fake.patch_discord():
                monkeypatch.chdir(tmp_path)
                monkeypatch.setenv("CHATLOOP_DISCORD_TOKEN", fake.token)
                monkeypatch.setenv("CHATLOOP_DISCORD_GUILD_IDS", GUILD)
                result = await asyncio.to_thread(CliRunner().invoke, app, ["discord", "sync"])
                assert result.exit_code == 0, result.output
                assert "to 1 server(s)" in result.stdout and "approve" in result.stdout
                names = {c["name"] for c in fake.commands(GUILD)}
                assert {"approve", "memory", "help", "Flag and correct"} <= names
                assert fake.commands(None) == []

                monkeypatch.setenv("CHATLOOP_DISCORD_TOKEN", "not-the-token")
                result = await asyncio.to_thread(CliRunner().invoke, app, ["discord", "sync"])
                assert result.exit_code == 1
                assert "rejected the bot token" in result.stderr

    run_bounded(go())


def test_canary_reject_and_adapters_commands(sessions: sessionmaker[Session]) -> None:
    pending(sessions, "v1", "v2", "v3")
    with transaction(sessions) as s:
        Adapters(s).transition("v1", AdapterStatus.ACTIVE, actor="test")

    async def go() -> None:
        async with discord_bot(sessions) as bot:
            before = registry(sessions)
            # a customer is refused every maintainer command, and nothing changes
            for sub, options in (
                ("rollback", {}),
                ("canary", {"version": "v2", "percent": 10.0}),
                ("reject", {"version": "v2"}),
            ):
                refused = await interact(bot, chatloop_command(sub, ALICE, **options))
                assert is_ephemeral(refused)
                assert refused["data"]["content"] == f"Only maintainers can use /{sub}."
            assert registry(sessions) == before

            canary = await interact(bot, chatloop_command("canary", MAX, version="v2", percent=5.0))
            assert is_ephemeral(canary)
            assert canary["data"]["content"] == "🐤 v2 now answers 5% of conversations."
            assert registry(sessions)["v2"] == ("pending", 5.0)
            status = await interact(bot, chatloop_command("status", MAX))
            assert "canary: v2 at 5%" in status["data"]["content"]

            rejected = await interact(
                bot, chatloop_command("reject", MAX, version="v3", reason="too chatty")
            )
            assert is_ephemeral(rejected) and rejected["data"]["content"] == "❌ v3 rejected."
            listing = await interact(bot, chatloop_command("adapters", MAX))
            assert is_ephemeral(listing)
            rows = [line.split()[:2] for line in listing["data"]["content"].splitlines()]
            assert rows == [["v1", "active"], ["v2", "pending"], ["v3", "rejected"]]

            stopped = await interact(
                bot, chatloop_command("canary", MAX, version="v2", percent=0.0)
            )
            assert stopped["data"]["content"] == "Canary of v2 stopped."
        assert registry(sessions) == {
            "v1": ("active", 0.0),
            "v2": ("pending", 0.0),
            "v3": ("rejected", 0.0),
        }
        with sessions() as s:
            entry = s.scalars(
                select(AuditEntry)
                .filter_by(target_id="v3", action="adapter.status")
                .order_by(AuditEntry.id.desc())
            ).first()
            assert entry is not None
            assert (entry.actor, entry.reason) == (f"discord:{MAX['id']}", "too chatty")

    run_bounded(go())


def test_approval_buttons_survive_a_restart(sessions: sessionmaker[Session]) -> None:
    pending(sessions, "v1", "v2")

    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            first = await bot.adapter.post_approval_request("v1", "win rate 0.58")
            second = await bot.adapter.post_approval_request("v2", "win rate 0.61")
            requests = {m["id"]: m for m in fake.bot_messages(MAINTAINERS)}
            await restart(bot)  # the buttons were posted by the previous process

            def request(message_id: str) -> JSON:
                return next(m for m in fake.bot_messages(MAINTAINERS) if m["id"] == message_id)

            reject = interaction_component("chatloop:reject:v1", message=requests[first])
            refused = await interact(bot, reject)
            assert is_ephemeral(refused) and "Only maintainers" in refused["data"]["content"]
            assert registry(sessions)["v1"] == ("pending", 0.0)
            assert request(first)["components"]  # a refusal leaves the request as it was

            reject = interaction_component("chatloop:reject:v1", message=requests[first], user=MAX)
            answer = await interact(bot, reject)
            assert is_ephemeral(answer) and answer["data"]["content"] == "❌ v1 rejected."
            assert registry(sessions)["v1"] == ("rejected", 0.0)
            decided = await eventually(
                lambda: (m := request(first)) and not m["components"] and m,
                "the rejected request without buttons",
            )
            assert "v1 rejected" in decided["content"] and f"<@{MAX['id']}>" in decided["content"]

            approve = interaction_component(
                "chatloop:approve:v2", message=requests[second], user=MAX
            )
            assert "v2 approved" in (await interact(bot, approve))["data"]["content"]
            assert registry(sessions)["v2"] == ("active", 0.0)

    run_bounded(go())


# -- allow-lists, rate limit, forged forms ----------------------------------------------------
def test_other_servers_are_ignored(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions, guilds=(other_guild(),)) as bot:
            fake = bot.fake
            # answered while every server was allowed ...
            old = await mention(bot, "anyone here?", channel_id=OTHER_CHANNEL, guild_id=OTHER_GUILD)
            thread = old["id"]
            (final,) = await wait_finals(fake, thread)
            reply_id = reply_id_of(final)
            # ... then the bot is limited to GUILD
            await restart(bot, guild_ids=[GUILD])
            asked = len(bot.gen.requests)

            new = await mention(bot, "still there?", channel_id=OTHER_CHANNEL, guild_id=OTHER_GUILD)
            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add("👍", message_id=final["id"], channel_id=thread, guild_id=OTHER_GUILD),
            )
            interactions = [
                interaction_component(
                    f"chatloop:vote:up:{reply_id}", message=final, guild_id=OTHER_GUILD
                ),
                with_roles(
                    interaction_message_context_menu(
                        "Flag and correct", target=final, user=SAM, guild_id=OTHER_GUILD
                    ),
                    STAFF_ROLE,
                ),
                chatloop_command("status", MAX, guild_id=OTHER_GUILD, channel_id=OTHER_CHANNEL),
            ]
            for payload in interactions:
                answer = await interact(bot, payload)
                assert is_ephemeral(answer)
                assert answer["data"]["content"] == "chatloop is not enabled in this server."

            # the allowed server is answered; by then everything above was handled
            here = await mention(bot, "and here?")
            await wait_finals(fake, here["id"])
            assert len(bot.gen.requests) == asked + 1
            assert bot.gen.requests[-1].messages[-1].content == "and here?"
            assert feedback(sessions) == []
            assert not fake.requests(
                "POST", f"/channels/{OTHER_CHANNEL}/messages/{new['id']}/threads"
            )
            with sessions() as s:
                assert s.scalars(select(Flag)).all() == []

    run_bounded(go())


def test_channel_allow_list_covers_reactions_and_interactions(
    sessions: sessionmaker[Session],
) -> None:
    pending(sessions, "v1")

    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            # answered in #random while every channel was allowed ...
            old = await mention(bot, "off topic?", channel_id=RANDOM)
            thread = old["id"]
            (final,) = await wait_finals(fake, thread)
            reply_id = reply_id_of(final)
            # ... then only #general is; the new process has not seen that thread
            await restart(bot, channel_ids=[GENERAL])

            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add("👍", message_id=final["id"], channel_id=thread),
            )
            await fake.dispatch("MESSAGE_CREATE", message_create("follow-up?", channel_id=thread))
            for payload in (
                interaction_component(f"chatloop:vote:up:{reply_id}", message=final),
                with_roles(
                    interaction_message_context_menu("Flag and correct", target=final, user=SAM),
                    STAFF_ROLE,
                ),
                chatloop_command("status", MAX, channel_id=RANDOM),
            ):
                answer = await interact(bot, payload)
                assert is_ephemeral(answer)
                assert answer["data"]["content"] == "chatloop is not enabled in this channel."
            # the thread's parent was looked up (it is not cached after the restart)
            assert fake.requests("GET", f"/channels/{thread}")

            # the maintainers channel is not listed, yet takes maintainer interactions
            status = await interact(bot, chatloop_command("status", MAX, channel_id=MAINTAINERS))
            assert "awaiting approval: v1" in status["data"]["content"]
            message_id = await bot.adapter.post_approval_request("v1", "win rate 0.6")
            (request,) = [m for m in fake.bot_messages(MAINTAINERS) if m["id"] == message_id]
            click = interaction_component("chatloop:approve:v1", message=request, user=MAX)
            assert "v1 approved" in (await interact(bot, click))["data"]["content"]

            # in the allowed channel (and its threads, by their parent) all of it works
            here = await mention(bot, "on topic")
            (answer_here,) = await wait_finals(fake, here["id"])
            await fake.dispatch(
                "MESSAGE_REACTION_ADD",
                reaction_add("👎", message_id=answer_here["id"], channel_id=here["id"]),
            )
            await eventually(lambda: feedback(sessions), "the vote in the allowed channel")
            assert feedback(sessions) == [(reply_id_of(answer_here), -1, "reaction", None)]
            assert [r.messages[-1].content for r in bot.gen.requests] == ["off topic?", "on topic"]

    run_bounded(go())


def test_slow_down_notice_is_a_short_lived_reply_to_the_asker(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        async with discord_bot(sessions, per_minute=1, notice_ttl_s=0.05) as bot:
            fake = bot.fake
            thread = (await mention(bot, "first question"))["id"]
            await wait_finals(fake, thread)

            second = message_create("second question", channel_id=thread)
            await fake.dispatch("MESSAGE_CREATE", second)
            (post,) = await fake.wait_for_request(
                "POST",
                f"/channels/{thread}/messages",
                where=lambda r: "faster than I can answer" in r.json.get("content", ""),
            )
            # addressed to the asker (a reply to their message), without a ping, no buttons
            assert str(post.json["message_reference"]["message_id"]) == second["id"]
            assert post.json["allowed_mentions"]["replied_user"] is False
            assert not post.json.get("components")
            notice_id = post.response["id"]
            # ... and gone again: Discord has no ephemeral answer to a message
            await fake.wait_for_request("DELETE", f"/channels/{thread}/messages/{notice_id}")
            assert all(m["id"] != notice_id for m in fake.messages(thread))

            # somebody else in the thread is answered as usual
            await fake.dispatch(
                "MESSAGE_CREATE", message_create("my turn", channel_id=thread, author=SAM)
            )
            await wait_finals(fake, thread, 2)
            assert [r.messages[-1].content for r in bot.gen.requests] == [
                "first question",
                "my turn",
            ]

            # a new mention: the reply goes under it in #general; where the bot may only
            # write in threads, the notice lands in the thread opened for the mention
            fake.fail_next("POST", f"/channels/{GENERAL}/messages", status=403, code=50013)
            third = await mention(bot, "third question")
            (fallback,) = await fake.wait_for_request(
                "POST", f"/channels/{third['id']}/messages", status=200
            )
            assert "faster than I can answer" in fallback.json["content"]
            await fake.wait_for_request(
                "DELETE", f"/channels/{third['id']}/messages/{fallback.response['id']}"
            )
            assert len(bot.gen.requests) == 2
            with sessions() as s:  # the limited messages are kept, not answered
                texts = [m.raw_text for m in s.scalars(select(Message).order_by(Message.id))]
            assert texts == ["first question", "second question", "my turn", "third question"]

    run_bounded(go())


def test_a_flag_form_only_takes_its_openers_submission(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            thread = (await mention(bot, "What is the refund window?"))["id"]
            (final,) = await wait_finals(fake, thread)
            reply_id = reply_id_of(final)

            # a customer forges a submission of a form that was never opened: dropped
            forged = interaction_modal_submit(
                f"chatloop:flag:{reply_id}:000000000000",
                {"reason": "spam", "correction": "visit my shop"},
                channel_id=thread,
            )
            await fake.dispatch("INTERACTION_CREATE", forged)

            async def open_form() -> JSON:
                menu = with_roles(
                    interaction_message_context_menu("Flag and correct", target=final, user=SAM),
                    STAFF_ROLE,
                )
                form = await interact(bot, menu)
                assert form["type"] == 9
                return form

            def submission(form: JSON, user: JSON, correction: str, *roles: str) -> JSON:
                reason_id, correction_id = custom_ids(form["data"])
                payload = interaction_modal_submit(
                    form["data"]["custom_id"],
                    {reason_id: "outdated", correction_id: correction},
                    user=user,
                    channel_id=thread,
                )
                return with_roles(payload, *roles)

            # staff opened it; a customer who got hold of its id is refused
            form = await open_form()
            stolen = await interact(bot, submission(form, ALICE, "visit my shop"))
            assert is_ephemeral(stolen)
            assert stolen["data"]["content"] == "This form was opened by someone else."
            # the form stays open for the one who opened it
            done = await interact(bot, submission(form, SAM, "30 days.", STAFF_ROLE))
            assert is_ephemeral(done) and "Flagged" in done["data"]["content"]

            # whoever submits, the core checks the role again: staff no more -> refused
            form = await open_form()
            late = await interact(bot, submission(form, SAM, "14 days."))
            assert is_ephemeral(late)
            assert late["data"]["content"] == "Only support staff can flag and correct answers."

            assert fake.interaction_responses(forged["id"]) == []
        with sessions() as s:
            flags = [(f.reply_id, f.corrected_text) for f in s.scalars(select(Flag))]
        assert flags == [(reply_id, "30 days.")]

    run_bounded(go())


# -- transport ---------------------------------------------------------------------------------
def test_a_replay_after_resume_is_answered_once(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def go() -> None:
        options = {"guild_ids": [GUILD], "channel_ids": [GENERAL]}
        async with discord_bot(sessions, **options) as bot:
            fake = bot.fake
            assert fake.requests("PUT") == []  # no command sync on READY
            await sync_commands(token=fake.token, guild_ids=[GUILD])
            assert fake.requests(
                "PUT", f"/applications/{fake.application_id}/guilds/{GUILD}/commands"
            )
            assert {c["name"] for c in fake.commands(GUILD)} >= {"approve", "Flag and correct"}
            first = await mention(bot, "first question")
            await wait_finals(fake, first["id"])

            await fake.drop_connection(4000, hold_reconnect=True)
            await fake.dispatch("MESSAGE_CREATE", first)  # Discord sends it again ...
            second = await mention(bot, "second question")  # ... and a new one, both buffered
            await mention(bot, "not an allowed channel", channel_id=MAINTAINERS)
            fake.release_reconnect()
            await fake.wait_for_op(6)  # RESUME, not a new IDENTIFY
            await wait_finals(fake, second["id"])
            assert len(fake.gateway_payloads(2)) == 1

            # drain: one more answer after everything replayed was handled
            third = await mention(bot, "third question")
            await wait_finals(fake, third["id"])
            assert len(finals(fake, first["id"])) == 1  # the replay was not answered again
            # ... though it did reach the adapter, which found its thread (no second one)
            handled = [
                (r.message_id, r.duplicate)  # type: ignore[attr-defined]
                for r in caplog.records
                if r.getMessage() == "discord message handled"
            ]
            assert handled.count((int(first["id"]), True)) == 1
            assert (
                len(fake.requests("POST", "/channels/{channel_id}/messages/{message_id}/threads"))
                == 3
            )
            assert not any("question" in r.getMessage() for r in caplog.records)  # no text logged
            assert fake.bot_messages(MAINTAINERS) == []
            assert [r.messages[-1].content for r in bot.gen.requests] == [
                "first question",
                "second question",
                "third question",
            ]

    run_bounded(go())


def test_rest_errors_are_retried_or_survived(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            # 429 with retry_after on the first send, 500 on the final edit: both retried
            fake.fail_next("POST", "/channels/{channel_id}/messages", status=429, retry_after=0.05)
            fake.fail_next("PATCH", "/channels/{channel_id}/messages/{message_id}", status=500)
            first = await mention(bot, "rate limited?")
            (final,) = await wait_finals(fake, first["id"])
            assert final["content"] == "answer: rate limited?"
            statuses = [r.status for r in fake.requests(path="/channels/{channel_id}/messages")]
            assert statuses[:2] == [429, 200]
            edits = [r.status for r in fake.requests("PATCH")]
            assert edits[0] == 500 and edits[-1] == 200

            # a failure that is not retried: that reply is lost, the bot is not
            fake.fail_next(
                "POST", "/channels/{channel_id}/messages", status=403, code=50013, times=2
            )
            await fake.dispatch("MESSAGE_CREATE", message_create("again?", channel_id=first["id"]))
            await fake.wait_for_request(
                "POST", "/channels/{channel_id}/messages", status=403, count=2
            )
            # no thread allowed: the answer comes as a reply in the channel
            fake.fail_next(
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                status=403,
                code=50013,
            )
            last = await mention(bot, "still there?")
            (reply,) = await wait_finals(fake, GENERAL)
            assert reply["content"] == "answer: still there?"
            assert reply["message_reference"]["message_id"] == last["id"]
            with sessions() as s:
                kinds = {c.kind.value for c in s.scalars(select(Conversation))}
                assert kinds == {"thread", "channel"}

    run_bounded(go())


def test_message_text_is_never_logged(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG, with discord.py as verbose as it gets: no record carries chat text."""
    marker = "ZEBRA-4111-1111-1111-1111"
    # a fresh process: nothing has pinned discord.py's loggers yet (the adapter must)
    touched = ["discord", *PAYLOAD_LOGGERS]
    saved = {name: logging.getLogger(name).level for name in touched}
    for name in touched:
        logging.getLogger(name).setLevel(logging.NOTSET)

    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            question = await mention(bot, f"my card is {marker}")
            thread = question["id"]
            (final,) = await wait_finals(fake, thread)
            assert marker in final["content"]  # the answer quotes it: outbound bodies too
            await fake.dispatch(
                "MESSAGE_CREATE", message_create(f"and {marker} again", channel_id=thread)
            )
            await wait_finals(fake, thread, 2)
            await fake.dispatch("MESSAGE_CREATE", dm_message_create(f"dm {marker}"))
            await wait_finals(fake, DEFAULT_DM_CHANNEL_ID)

            click = interaction_component(f"chatloop:vote:down:{reply_id_of(final)}", message=final)
            form = await interact(bot, click)
            (reason_input,) = custom_ids(form["data"])
            submit = interaction_modal_submit(
                form["data"]["custom_id"], {reason_input: f"reason {marker}"}, channel_id=thread
            )
            assert is_ephemeral(await interact(bot, submit))
            command = chatloop_command("reject", MAX, version="v9", reason=f"because {marker}")
            assert is_ephemeral(await interact(bot, command))
        assert feedback(sessions)[0][3] == f"reason {marker}"

    try:
        with caplog.at_level(logging.DEBUG):
            run_bounded(go())
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    assert any(r.name.startswith("discord.") and r.levelno == logging.DEBUG for r in caplog.records)
    for record in caplog.records:
        assert marker not in record.getMessage(), record.name
        assert all(marker not in str(value) for value in vars(record).values()), record.name


def test_verbose_logging_keeps_discord_payload_loggers_at_info() -> None:
    from chatloop import logs

    root = logging.getLogger()
    touched = ["discord", "discord.client", "asyncio", "slack_sdk", "slack_bolt", "httpx"]
    touched += ["urllib3", "alembic", *logs.PAYLOAD_LOGGERS]
    saved = {name: logging.getLogger(name).level for name in touched}
    handlers, level = root.handlers[:], root.level
    try:
        for name in touched:
            logging.getLogger(name).setLevel(logging.NOTSET)
        logs.setup_logging("DEBUG")  # what --verbose does
        assert logging.getLogger("discord.client").isEnabledFor(logging.DEBUG)
        assert set(PAYLOAD_LOGGERS) == set(logs.PAYLOAD_LOGGERS)
        for name in (*PAYLOAD_LOGGERS, "discord.webhook.async_"):
            assert logging.getLogger(name).getEffectiveLevel() == logging.INFO, name
        logs.setup_logging("INFO")  # and without it, discord.py stays at warnings
        for name in ("discord.client", *PAYLOAD_LOGGERS):
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in saved.items():
            logging.getLogger(name).setLevel(value)


def test_readme_intents_are_the_adapters() -> None:
    wanted = intents()
    single_bits = {
        name
        for name, value in discord.Intents.VALID_FLAGS.items()
        if value & (value - 1) == 0 and getattr(wanted, name)
    }
    assert single_bits == {"guilds", "guild_messages", "dm_messages", "message_content"} | {
        "guild_reactions",
        "dm_reactions",
    }
    root = Path(__file__).resolve().parents[3]
    for readme in (root / "README.md", root / "bot/platforms/discord/README.md"):
        text = readme.read_text(encoding="utf-8")
        (line,) = re.findall(r"Gateway intents requested:(.*?)\.\n", text, flags=re.S)
        listed = set(re.findall(r"`([a-z_]+)`", line))
        assert listed == single_bits, readme


def test_a_bad_token_is_a_clear_error(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with ThreadingFake(guilds=[make_guild()]) as fake:
            with fake.patch_discord():
                adapter = DiscordAdapter(
                    core=make_core(sessions, ScriptedGenerator()), token="not-the-token"
                )
                with pytest.raises(DiscordAdapterError, match="rejected the bot token"):
                    await adapter.start(ready_timeout_s=WAIT)

    run_bounded(go())


# -- splitting (pure) ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("short", ["short"]),
        ("a" * 30 + "\n\n" + "b" * 30, ["a" * 30, "b" * 30]),
        ("first sentence here. " + "w" * 40, ["first sentence here.", "w" * 40]),
        (
            "```py\n" + "x = 1\n" * 12 + "```",
            ["```py\n" + "x = 1\n" * 6 + "```", "```py\n" + "x = 1\n" * 6 + "```"],
        ),
    ],
)
def test_split_message_boundaries(text: str, expected: list[str]) -> None:
    assert split_message(text, limit=60 if "```" not in text else 50) == expected


def test_split_message_is_prefix_stable_and_bounded() -> None:
    words = ["alpha", "beta.", "gamma!", "😀😀", "delta\n", "\n\n", "```js\n", "```\n", "eps"]
    text = " ".join(words[(i * 7) % len(words)] for i in range(3000))
    parts = split_message(text)
    assert all(0 < utf16_len(p) <= 2000 for p in parts)
    assert all(open_fence(p) is None for p in parts[:-1])
    for cut in range(2100, len(text), 997):
        prefix_parts = split_message(text[:cut])
        assert prefix_parts[:-1] == parts[: len(prefix_parts) - 1]
    assert re.sub(r"\s+|```(js)?", "", "".join(parts)) == re.sub(r"\s+|```(js)?", "", text)


def test_edits_are_paced_per_channel() -> None:
    now = [100.0]
    pacer = EditPacer(interval=1.0, clock=lambda: now[0])
    assert pacer.reserve(1) == 0.0  # the first message
    assert pacer.reserve(1) == 1.0  # the next edit waits a full interval
    assert pacer.reserve(2) == 0.0  # another channel has its own budget
    assert pacer.reserve(1) == 2.0  # two replies in one channel share it
    now[0] += 5.0
    assert pacer.reserve(1) == 0.0
