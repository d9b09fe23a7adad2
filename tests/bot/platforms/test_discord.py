"""The Discord adapter end to end: the real discord.py client on a local fake Discord.

Each test starts the fake Discord (REST v10 + gateway, tests/fakes/discord_fake.py) on a
free port, points discord.py at it, and runs the real :class:`DiscordAdapter` with the
real core on SQLite and PostgreSQL; only the model is scripted (tests/bot/fakes.py).
Events go in as gateway dispatches (MESSAGE_CREATE, MESSAGE_REACTION_ADD,
INTERACTION_CREATE, ...); what the bot did is read from the fake's REST log, its message
store and the database.

One local addition to the fake (``ThreadingFake``): the shared fake does not model
threads, so starting a thread from a message (``POST .../messages/{id}/threads``, which
answers with the thread and dispatches THREAD_CREATE) is added here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, RolePolicy
from bot.platforms.discord import DiscordAdapter, DiscordAdapterError
from bot.platforms.discord.sink import EditPacer
from bot.platforms.discord.split import open_fence, split_message, utf16_len
from serving.types import GenerationRequest, GenerationResult, ReplyStream
from storage.db import transaction
from storage.models import Adapter, AdapterStatus, Conversation, Feedback, Flag, Message, Reply
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
        ],
        members=[
            member_payload(ALICE),
            member_payload(SAM, roles=[STAFF_ROLE]),
            member_payload(MAX),
            member_payload(user_payload(BOT, "fakebot", bot=True)),
        ],
        roles=[role_payload(GUILD, "@everyone"), role_payload(STAFF_ROLE, "support", position=1)],
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


def make_core(sessions: sessionmaker[Session], gen: ScriptedGenerator) -> Core:
    return Core(
        generator=gen,
        sessions=sessions,
        roles=RolePolicy(
            staff=[f"discord-role:{STAFF_ROLE}"], maintainers=[f"discord:{MAX['id']}"]
        ),
        config=CoreConfig(system_prompt="Be brief."),
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
    sessions: sessionmaker[Session], gen: ScriptedGenerator | None = None, **options: Any
) -> AsyncIterator[Bot]:
    gen = gen or ScriptedGenerator()
    async with ThreadingFake(guilds=[make_guild()]) as fake:
        with fake.patch_discord():
            core = make_core(sessions, gen)
            adapter = make_adapter(core, fake, **options)
            bot = Bot(fake, adapter, core, gen, sessions)
            try:
                await adapter.start(ready_timeout_s=WAIT)
                yield bot
            finally:
                await bot.adapter.close()  # the one running now (a test may restart it)


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
def chatloop_command(sub: str, user: JSON, **options: Any) -> JSON:
    opts = [
        {"name": k, "type": 10 if isinstance(v, float) else 3, "value": v}
        for k, v in options.items()
    ]
    return interaction_app_command(
        "chatloop", [{"name": sub, "type": 1, "options": opts}], user=user
    )


def test_maintainer_commands_and_approval_requests(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        for v in ("v1", "v2"):
            Adapters(s).register(version=v, base_model="smol")
            Adapters(s).transition(v, AdapterStatus.CANDIDATE, actor="learning")
            Adapters(s).transition(v, AdapterStatus.PENDING, actor="learning")

    def active() -> list[str]:
        with sessions() as s:
            return [
                a.version for a in s.scalars(select(Adapter).filter_by(status=AdapterStatus.ACTIVE))
            ]

    async def go() -> None:
        async with discord_bot(sessions) as bot:
            fake = bot.fake
            # the commands are registered (globally: no guild allow-list here)
            await fake.wait_for_request("PUT", "/applications/{application_id}/commands")
            registered = {c["name"]: c for c in fake.commands(None)}
            assert set(registered) == {"chatloop", "Flag and correct"}
            subs = {o["name"] for o in registered["chatloop"]["options"]}
            assert subs == {"status", "adapters", "approve", "reject", "rollback", "canary"}

            refused = await interact(bot, chatloop_command("approve", ALICE, version="v1"))
            assert is_ephemeral(refused)
            assert refused["data"]["content"] == "Only maintainers can use /approve."
            approved = await interact(bot, chatloop_command("approve", MAX, version="v1"))
            assert is_ephemeral(approved) and "v1 approved" in approved["data"]["content"]
            assert active() == ["v1"]
            status = await interact(bot, chatloop_command("status", MAX))
            assert "awaiting approval: v2" in status["data"]["content"]

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
            canary = await interact(bot, chatloop_command("canary", MAX, version="v2", percent=5.0))
            assert is_ephemeral(canary)

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
            await fake.wait_for_request(
                "PUT", f"/applications/{fake.application_id}/guilds/{GUILD}/commands"
            )
            assert {c["name"] for c in fake.commands(GUILD)} == {"chatloop", "Flag and correct"}
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
