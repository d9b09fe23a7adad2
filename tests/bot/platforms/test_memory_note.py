"""The "from the answer memory" note with the entry id reaches every platform:
the terminal, Slack (a context line of the finished reply) and Discord (small
print under the reply), each through its real adapter and the fakes of its API;
and ``/memory`` reaches the core from Slack (``/chatloop memory ...``) and Discord
(the ``/memory`` app command group), staff only."""

from __future__ import annotations

import io

import aiohttp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, RolePolicy
from bot.platforms.console import ConsoleAdapter
from bot.platforms.slack import SlackAdapter
from serving.embed import HashingEmbedder
from serving.memory import AnswerMemory, MemoryConfig
from serving.types import GenerationParams
from storage.db import transaction
from storage.memory import MemoryEntries
from storage.models import Conversation, MemorySource
from tests.bot.fakes import ScriptedGenerator
from tests.bot.platforms.test_discord import (
    ALICE,
    JSON,
    SAM,
    STAFF_ROLE,
    ThreadingFake,
    discord_bot,
    interact,
    make_adapter,
    make_guild,
    mention,
    wait_finals,
    with_roles,
)
from tests.bot.platforms.test_discord import Bot as DiscordBot
from tests.bot.platforms.test_slack import SECRET, FakeSlack, slack_bot, slash
from tests.bot.platforms.test_slack import STAFF as SLACK_STAFF
from tests.bot.platforms.test_slack import Bot as SlackBot
from tests.conftest import run
from tests.fakes.discord_fake import interaction_app_command


def memory_command(sub: str, user: JSON, **options: object) -> JSON:
    """``/memory <sub> option:value ...`` (a sub-command of the generated group)."""
    opts = [
        {"name": k, "type": 4 if isinstance(v, int) else 3, "value": v} for k, v in options.items()
    ]
    return interaction_app_command("memory", [{"name": sub, "type": 1, "options": opts}], user=user)


QUESTION = "What are your opening hours on Saturday?"
ANSWER = "We are open from 9:00 to 14:00 on Saturdays."


def memory_core(sessions: sessionmaker[Session], gen: ScriptedGenerator) -> Core:
    memory = AnswerMemory(
        sessions=sessions, embedder=HashingEmbedder(256), config=MemoryConfig(min_score=0.3)
    )
    return Core(
        generator=gen,
        sessions=sessions,
        roles=RolePolicy(),
        config=CoreConfig(
            system_prompt="Be brief.",
            params=GenerationParams(max_new_tokens=8, max_context_tokens=1024),
        ),
        memory=memory,
    )


def remember(sessions: sessionmaker[Session]) -> int:
    """A curated entry in the workspace of the (only) conversation so far."""
    with transaction(sessions) as s:
        workspace_id = s.scalars(select(Conversation.workspace_id)).first()
        row = MemoryEntries(s).add(
            workspace_id=workspace_id,
            question=QUESTION,
            answer=ANSWER,
            source=MemorySource.CURATED,
            actor="cli:test",
        )
        return row.id


def test_console_shows_the_note(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        entry_id = (
            MemoryEntries(s)
            .add(
                workspace_id=None,
                question=QUESTION,
                answer=ANSWER,
                source=MemorySource.CURATED,
                actor="cli:test",
            )
            .id
        )
    gen = ScriptedGenerator()
    out = io.StringIO()
    adapter = ConsoleAdapter(
        core=memory_core(sessions, gen),
        user_id="alice",
        stdin=io.StringIO("when are you open on saturday?\nhello there\n"),
        stdout=out,
    )
    run(adapter.run())
    text = out.getvalue()
    assert text.count(f"📚 from the answer memory: #{entry_id}") == 1
    assert ANSWER in gen.requests[0].messages[0].content


def test_slack_reply_carries_the_note_in_a_context_line(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        gen = ScriptedGenerator()
        async with FakeSlack() as api:
            adapter = SlackAdapter(
                core=memory_core(sessions, gen),
                bot_token=api.bot_token,
                signing_secret=SECRET,
                api_url=api.url,
                http_port=0,
                min_edit_interval_s=0.0,
            )
            await adapter.start()
            try:
                async with aiohttp.ClientSession() as http:
                    bot = SlackBot(api, adapter, http, gen, sessions)
                    first = await bot.ask("hello")
                    entry_id = remember(sessions)
                    second = await bot.ask("when are you open on saturday?")
                    (plain,) = bot.bot_messages(thread_ts=first["ts"])
                    (used,) = bot.bot_messages(thread_ts=second["ts"])
            finally:
                await adapter.stop()
        note = f"📚 from the answer memory: #{entry_id}"
        assert not any(note in str(b) for b in plain["blocks"])
        contexts = [
            e["text"] for b in used["blocks"] if b["type"] == "context" for e in b["elements"]
        ]
        assert note in contexts

    run(go())


def test_discord_reply_carries_the_note_as_small_print(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        gen = ScriptedGenerator()
        async with ThreadingFake(guilds=[make_guild()]) as fake:
            with fake.patch_discord():
                core = memory_core(sessions, gen)
                adapter = make_adapter(core, fake)
                bot = DiscordBot(fake, adapter, core, gen, sessions)
                try:
                    await adapter.start(ready_timeout_s=10.0)
                    first = await mention(bot, "hello")
                    (plain,) = await wait_finals(fake, first["id"])
                    entry_id = remember(sessions)
                    second = await mention(bot, "when are you open on saturday?")
                    (used,) = await wait_finals(fake, second["id"])
                finally:
                    await adapter.close()
        note = f"-# 📚 from the answer memory: #{entry_id}"
        assert "answer memory" not in plain["content"]
        assert used["content"].endswith(note)
        assert used["content"].startswith("answer: when are you open on saturday?")

    run(go())


def test_slack_staff_manage_the_memory_with_the_slash_command(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        async with slack_bot(sessions, staff=(f"slack:{SLACK_STAFF}",)) as bot:
            added = await slash(
                bot, "memory add Do you ship to Norway? | Yes, with UPS.", SLACK_STAFF
            )
            assert "Added answer-memory entry #1" in added
            listed = await slash(bot, "memory list", SLACK_STAFF)
            assert "#1" in listed and "Norway" in listed
            refused = await slash(bot, "memory retire 1", "U0000CUST")
            assert "Only support staff and maintainers" in refused
            retired = await slash(bot, "memory retire 1 wrong", SLACK_STAFF)
            assert "retired" in retired

    run(go())


def test_discord_staff_manage_the_memory_with_the_app_command(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        async with discord_bot(sessions) as bot:
            add = with_roles(
                memory_command("add", SAM, question="Open on Sunday?", answer="No."),
                STAFF_ROLE,
            )
            added = await interact(bot, add)
            assert "Added answer-memory entry #1" in added["data"]["content"]
            listed = await interact(bot, with_roles(memory_command("list", SAM), STAFF_ROLE))
            assert "#1" in listed["data"]["content"] and "Sunday" in listed["data"]["content"]
            refused = await interact(bot, memory_command("retire", ALICE, id=1))
            assert refused["data"]["content"] == (
                "Only support staff and maintainers can use /memory."
            )
            shown = await interact(bot, with_roles(memory_command("show", SAM, id=1), STAFF_ROLE))
            assert "Q: Open on Sunday?" in shown["data"]["content"]
            assert "A: No." in shown["data"]["content"]

    run(go())
