"""The Slack adapter end to end: real slack-bolt, real HTTP, a local fake of Slack's Web API.

Each test starts the fake Web API (tests/fakes/slack_api.py) and the adapter's own
aiohttp endpoint on free ports, posts signed requests to it the way Slack does, and
checks what reached the fake and the database (SQLite and PostgreSQL). The core is
real; only the model is scripted (tests/bot/fakes.py).

Two small local additions to the fake (see ``FakeSlack``): ``usergroups.list`` with
members, and a ``response_url`` pointing at the fake (it records any unknown path).
Socket Mode runs against the fake's websocket (``apps.connections.open`` with the app
token, then hello / envelopes / acks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.core import Core, CoreConfig, RolePolicy
from bot.platforms.slack import SlackAdapter, SlackConfigError
from bot.platforms.slack import blocks as ui
from serving.types import GenerationParams, GenerationRequest, GenerationResult, ReplyStream
from storage.db import transaction
from storage.models import (
    Adapter,
    AdapterStatus,
    AuditEntry,
    Conversation,
    Feedback,
    Flag,
    Message,
    ProcessedEvent,
    Reply,
)
from storage.repositories import Adapters
from tests.bot.fakes import ScriptedGenerator
from tests.conftest import run
from tests.fakes.slack_api import (
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_DM_CHANNEL_ID,
    DEFAULT_USER_ID,
    FakeSlackAPI,
    app_mention_event,
    block_actions_payload,
    event_callback,
    message_event,
    message_shortcut_payload,
    new_ts,
    parse_form_payload,
    reaction_added_event,
    sign_slack_request,
    signed_request,
    slash_command_body,
    socket_mode_envelope,
    view_submission_payload,
)

SECRET = "test-signing-secret-0123456789"
STAFF = "U0000STAF"
MAINTAINER = "U0000MNT1"
GROUP_MEMBER = "U0000GRP1"
MAINTAINERS_CHANNEL = "C0000MNTS"
WAIT = 15.0  # upper bound for any wait; tests normally finish far sooner


class FakeSlack(FakeSlackAPI):
    """The shared fake plus ``usergroups.list`` (with members) for group-based roles."""

    def __init__(self, *, groups: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        self.groups = groups or {}
        self._handlers["usergroups.list"] = self._m_usergroups_list

    def _m_usergroups_list(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        return {"usergroups": [{"id": g, "users": list(u)} for g, u in self.groups.items()]}

    def response_url(self, name: str) -> str:
        """A ``response_url`` on the fake: calls are recorded as method ``respond.<name>``."""
        return f"{self.url}respond.{name}"

    def responses(self, name: str) -> list[str]:
        return [str(c.args.get("text", "")) for c in self.calls(f"respond.{name}")]


class LongGenerator(ScriptedGenerator):
    """Answers with ``self.answer`` in many small deltas."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def stream(self, request: GenerationRequest) -> ReplyStream:
        self.requests.append(request)
        out = ReplyStream(asyncio.get_running_loop())
        for start in range(0, len(self.answer), 250):
            out.push(self.answer[start : start + 250])
        out.finish(
            GenerationResult(
                text=self.answer,
                finish_reason="stop",
                prompt_tokens=10,
                completion_tokens=len(self.answer.split()),
                latency_ms=5.0,
                ttft_ms=1.0,
                adapter_version=self.version,
                model_id=self.model_id,
                replica_id="replica-test",
            )
        )
        return out


class HeldGenerator(ScriptedGenerator):
    """The scripted answer, held back until ``release`` is set; ``asked`` once requested."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()
        self._relays: set[asyncio.Task[None]] = set()

    def stream(self, request: GenerationRequest) -> ReplyStream:
        inner = super().stream(request)
        out = ReplyStream(asyncio.get_running_loop())

        async def relay() -> None:
            await self.release.wait()
            async for delta in inner:
                out.push(delta)
            out.finish(await inner.result())

        task = asyncio.get_running_loop().create_task(relay())
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)
        self.asked.set()
        return out


@dataclass
class Bot:
    api: FakeSlack
    adapter: SlackAdapter
    http: aiohttp.ClientSession
    generator: ScriptedGenerator
    sessions: sessionmaker[Session]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.port}/slack/events"

    async def send(
        self,
        payload: dict[str, Any] | str,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        body, signed = signed_request(secret, payload, timestamp)
        async with self.http.post(
            self.url, data=body.encode(), headers={**signed, **(headers or {})}
        ) as response:
            await response.read()
            return response.status

    async def send_raw(self, body: bytes, content_type: str = "application/json") -> int:
        headers = {"Content-Type": content_type, **sign_slack_request(SECRET, body)}
        async with self.http.post(self.url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def event(self, inner: dict[str, Any], **kwargs: Any) -> int:
        return await self.send(event_callback(inner, **kwargs))

    async def settle(self) -> None:
        async with asyncio.timeout(WAIT):
            await self.adapter.wait_idle()

    async def ask(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """Mention the bot in the channel; return the mention event."""
        mention = app_mention_event(text, **kwargs)
        assert await self.event(mention) == 200
        await self.settle()
        return mention

    def bot_messages(self, channel: str = DEFAULT_CHANNEL_ID, **kw: Any) -> list[dict[str, Any]]:
        return [m for m in self.api.messages(channel, **kw) if m.get("user") == DEFAULT_BOT_USER_ID]

    def ephemeral(self, channel: str = DEFAULT_CHANNEL_ID) -> list[str]:
        return [str(m.get("text", "")) for m in self.api.ephemeral_messages(channel)]


def make_core(
    sessions: sessionmaker[Session],
    generator: ScriptedGenerator,
    *,
    staff: tuple[str, ...] = (),
    maintainers: tuple[str, ...] = (),
    per_minute: int = 0,
) -> Core:
    return Core(
        generator=generator,
        sessions=sessions,
        roles=RolePolicy(staff=staff, maintainers=maintainers),
        config=CoreConfig(
            system_prompt="Be brief.",
            params=GenerationParams(max_new_tokens=8, max_context_tokens=512),
            user_messages_per_minute=per_minute,
        ),
    )


@asynccontextmanager
async def slack_bot(
    sessions: sessionmaker[Session],
    *,
    generator: ScriptedGenerator | None = None,
    staff: tuple[str, ...] = (),
    maintainers: tuple[str, ...] = (),
    groups: dict[str, list[str]] | None = None,
    edit_interval: float = 1.0,
    per_minute: int = 0,
) -> AsyncIterator[Bot]:
    generator = generator or ScriptedGenerator()
    async with FakeSlack(groups=groups) as api:
        core = make_core(
            sessions, generator, staff=staff, maintainers=maintainers, per_minute=per_minute
        )
        adapter = SlackAdapter(
            core=core,
            bot_token=api.bot_token,
            signing_secret=SECRET,
            api_url=api.url,
            http_port=0,
            maintainers_channel=MAINTAINERS_CHANNEL,
            min_edit_interval_s=edit_interval,
        )
        await adapter.start()
        try:
            async with aiohttp.ClientSession() as http:
                yield Bot(api, adapter, http, generator, sessions)
        finally:
            await adapter.stop()


def reaction_removed_event(reaction: str, *, item_ts: str, user: str) -> dict[str, Any]:
    """The fake has a builder for ``reaction_added`` only; removal has the same shape."""
    return {
        **reaction_added_event(reaction, item_ts=item_ts, user=user),
        "type": "reaction_removed",
    }


def actions_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


def section_texts(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in message.get("blocks", []) if b["type"] == "section"]


def one_reply(sessions: sessionmaker[Session]) -> Reply:
    with sessions() as s:
        return s.scalars(select(Reply)).one()


def votes(sessions: sessionmaker[Session]) -> list[tuple[int, str, str | None]]:
    with sessions() as s:
        return [(f.value, f.source, f.reason) for f in s.scalars(select(Feedback))]


def pending_adapters(sessions: sessionmaker[Session], *versions: str) -> None:
    with transaction(sessions) as s:
        for v in versions:
            Adapters(s).register(version=v, base_model="smol")
            Adapters(s).transition(v, AdapterStatus.CANDIDATE, actor="learning")
            Adapters(s).transition(v, AdapterStatus.PENDING, actor="learning")


def status_of(sessions: sessionmaker[Session], version: str) -> AdapterStatus:
    with sessions() as s:
        return s.scalars(select(Adapter).filter_by(version=version)).one().status


def registry(sessions: sessionmaker[Session]) -> dict[str, tuple[str, float]]:
    """version -> (status, canary percent), as the registry has them."""
    with sessions() as s:
        return {a.version: (a.status.value, a.canary_percent) for a in s.scalars(select(Adapter))}


def last_status_change(sessions: sessionmaker[Session], version: str) -> AuditEntry:
    with sessions() as s:
        rows = s.scalars(
            select(AuditEntry)
            .filter_by(target_id=version, action="adapter.status")
            .order_by(AuditEntry.id)
        ).all()
        return rows[-1]


async def slash(bot: Bot, text: str, user: str = MAINTAINER) -> str:
    """Run ``/chatloop <text>``; the one (ephemeral) answer on its ``response_url``."""
    name = f"c{len(bot.api.calls())}"
    body = slash_command_body("/chatloop", text, user=user, response_url=bot.api.response_url(name))
    assert await bot.send(body) == 200
    await bot.settle()
    (answer,) = bot.api.responses(name)
    (call,) = bot.api.calls(f"respond.{name}")
    assert call.args["response_type"] == "ephemeral"
    return answer


# conversations ---------------------------------------------------------------------


def test_mention_gets_a_streamed_reply_in_its_thread(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions, edit_interval=0.0) as bot:
            mention = app_mention_event("How do I reset my password?")
            # Slack also sends the same message as a plain `message` event: answered once
            echo = message_event(
                mention["text"],
                channel=DEFAULT_CHANNEL_ID,
                channel_type="channel",
                ts=mention["ts"],
            )
            assert await bot.event(mention) == 200
            assert await bot.event(echo) == 200
            await bot.settle()

            posts = bot.api.calls("chat.postMessage")
            updates = bot.api.calls("chat.update")
            assert len(posts) == 1 and posts[0].args["thread_ts"] == mention["ts"]
            assert len(updates) >= 2  # streamed edit(s), then the final text with buttons
            first = bot.api.calls()
            assert [c.method for c in first].index("chat.postMessage") < [
                c.method for c in first
            ].index("chat.update")
            (reply_msg,) = bot.bot_messages(thread_ts=mention["ts"])
            reply = one_reply(sessions)
            assert section_texts(reply_msg) == ["answer: How do I reset my password?"]
            buttons = actions_of(reply_msg)
            assert [b["action_id"] for b in buttons] == [ui.VOTE_UP, ui.VOTE_DOWN]
            assert {b["value"] for b in buttons} == {str(reply.id)}
            assert any(b["type"] == "context" for b in reply_msg["blocks"])
            assert reply.platform_message_id == reply_msg["ts"]
            with sessions() as s:
                (msg,) = s.scalars(select(Message)).all()
                assert msg.raw_text == "How do I reset my password?"  # the mention is dropped
                conv = s.get(Conversation, reply.conversation_id)
                assert conv is not None
                assert (conv.channel_id, conv.thread_id, conv.kind.value) == (
                    DEFAULT_CHANNEL_ID,
                    mention["ts"],
                    "thread",
                )

    run(go())


def test_direct_message_is_answered_in_the_dm(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            assert await bot.event(message_event("hello there")) == 200
            await bot.settle()
            (post,) = bot.api.calls("chat.postMessage")
            assert post.args["channel"] == DEFAULT_DM_CHANNEL_ID and "thread_ts" not in post.args
            (reply_msg,) = bot.bot_messages(DEFAULT_DM_CHANNEL_ID)
            assert section_texts(reply_msg) == ["answer: hello there"]
            assert actions_of(reply_msg)
            with sessions() as s:
                (conv,) = s.scalars(select(Conversation)).all()
                assert conv.kind.value == "dm" and conv.thread_id == ""

    run(go())


def test_thread_follow_ups_use_context_and_other_chatter_is_ignored(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            mention = await bot.ask("What is chatloop?")
            thread = mention["ts"]
            follow = message_event(
                "And who runs it?",
                channel=DEFAULT_CHANNEL_ID,
                channel_type="channel",
                thread_ts=thread,
            )
            assert await bot.event(follow) == 200
            await bot.settle()
            assert len(bot.bot_messages(thread_ts=thread)) == 2
            history = [(m.role, m.content) for m in bot.generator.requests[1].messages]
            assert ("user", "What is chatloop?") in history
            assert ("assistant", "answer: What is chatloop?") in history
            assert history[-1] == ("user", "And who runs it?")

            # not answered: other threads, top-level chatter, edits, other bots, itself
            ignored = [
                message_event(
                    "side talk",
                    channel=DEFAULT_CHANNEL_ID,
                    channel_type="channel",
                    thread_ts=new_ts(),
                ),
                message_event("top level", channel=DEFAULT_CHANNEL_ID, channel_type="channel"),
                message_event(
                    "edited",
                    channel=DEFAULT_CHANNEL_ID,
                    channel_type="channel",
                    thread_ts=thread,
                    subtype="message_changed",
                ),
                message_event(
                    "beep",
                    channel=DEFAULT_CHANNEL_ID,
                    channel_type="channel",
                    thread_ts=thread,
                    bot_id="B0THER",
                    subtype="bot_message",
                ),
                message_event(
                    "me",
                    channel=DEFAULT_CHANNEL_ID,
                    channel_type="channel",
                    thread_ts=thread,
                    user=DEFAULT_BOT_USER_ID,
                ),
            ]
            for event in ignored:
                assert await bot.event(event) == 200
            await bot.settle()
            assert len(bot.generator.requests) == 2

        # a new process (no memory) asks Slack whether it replied in the thread
        async with slack_bot(sessions) as bot:
            parent = bot.api.add_message(DEFAULT_CHANNEL_ID, "first question")
            bot.api.add_message(
                DEFAULT_CHANNEL_ID, "earlier answer", user=DEFAULT_BOT_USER_ID, thread_ts=parent
            )
            later = message_event(
                "one more thing",
                channel=DEFAULT_CHANNEL_ID,
                channel_type="channel",
                thread_ts=parent,
            )
            assert await bot.event(later) == 200
            await bot.settle()
            assert bot.api.calls("conversations.replies")
            assert [section_texts(m) for m in bot.bot_messages(thread_ts=parent)][-1] == [
                "answer: one more thing"
            ]

    run(go())


def test_throttled_streaming_edits_once_per_interval(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        answer = " ".join(f"word{i}" for i in range(200))
        async with slack_bot(sessions, generator=LongGenerator(answer), edit_interval=3600) as bot:
            await bot.ask("stream please")
            # many deltas, but within one interval: the first post and the final edit only
            assert len(bot.api.calls("chat.postMessage")) == 1
            assert len(bot.api.calls("chat.update")) == 1
            (msg,) = bot.bot_messages()
            assert section_texts(msg) == [answer] and actions_of(msg)

    run(go())


def test_a_long_reply_is_split_at_word_boundaries(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        sentence = "Chatloop keeps every answer traceable to the adapter that wrote it. "
        paragraph = sentence * 12
        answer = "\n\n".join(paragraph.strip() for _ in range(5))
        answer += "\n\n" + (sentence * 60).strip() + " " + "x&y<z> " * 40  # one 4,000+ paragraph
        assert len(answer) > 8000
        async with slack_bot(sessions, generator=LongGenerator(answer), edit_interval=0.0) as bot:
            mention = await bot.ask("tell me everything")
            parts = bot.bot_messages(thread_ts=mention["ts"])
            assert len(parts) >= 3
            texts = [t for m in parts for t in section_texts(m)]
            assert all(len(t) <= ui.SECTION_CHARS for t in texts)
            assert all(len(m["text"]) <= 4000 for m in parts)
            joined = " ".join(texts).replace("&lt;", "<").replace("&gt;", ">")
            joined = joined.replace("&amp;", "&")
            assert joined.split() == answer.split()  # nothing lost, no word cut in two
            assert [bool(actions_of(m)) for m in parts] == [False] * (len(parts) - 1) + [True]
            assert one_reply(sessions).platform_message_id == parts[-1]["ts"]

    run(go())


# feedback --------------------------------------------------------------------------


def test_button_and_reaction_votes_last_one_wins(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            await bot.ask("Is this helpful?")
            (reply_msg,) = bot.bot_messages()
            reply_id = one_reply(sessions).id
            up = block_actions_payload(ui.VOTE_UP, value=str(reply_id), message=reply_msg)
            assert await bot.send(up) == 200
            await bot.settle()
            assert votes(sessions) == [(1, "button", None)]
            assert any("Thanks for the feedback" in t for t in bot.ephemeral())
            again = block_actions_payload(ui.VOTE_UP, value=str(reply_id), message=reply_msg)
            assert await bot.send(again) == 200  # same click again: still one vote
            await bot.settle()
            assert votes(sessions) == [(1, "button", None)]

            down = reaction_added_event("-1", item_ts=reply_msg["ts"], user=DEFAULT_USER_ID)
            assert await bot.event(down) == 200
            await bot.settle()
            assert votes(sessions) == [(-1, "reaction", None)]
            removed = reaction_removed_event("-1", item_ts=reply_msg["ts"], user=DEFAULT_USER_ID)
            assert await bot.event(removed) == 200
            await bot.settle()
            assert votes(sessions) == [(0, "reaction", None)]
            skin = reaction_added_event(
                "+1::skin-tone-3", item_ts=reply_msg["ts"], user=DEFAULT_USER_ID
            )
            other = reaction_added_event("tada", item_ts=reply_msg["ts"], user=DEFAULT_USER_ID)
            assert await bot.event(skin) == 200 and await bot.event(other) == 200
            await bot.settle()
            assert votes(sessions) == [(1, "reaction", None)]

    run(go())


def test_thumbs_down_asks_for_a_reason(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            await bot.ask("What is the refund policy?")
            (reply_msg,) = bot.bot_messages()
            reply_id = one_reply(sessions).id
            down = block_actions_payload(ui.VOTE_DOWN, value=str(reply_id), message=reply_msg)
            assert await bot.send(down) == 200
            await bot.settle()
            assert votes(sessions) == [
                (-1, "button", None)
            ]  # recorded even if the modal is skipped
            (view,) = bot.api.views()
            assert view["callback_id"] == ui.REASON_MODAL
            submitted = view_submission_payload(
                ui.REASON_MODAL,
                {"reason": {"reason": {"type": "plain_text_input", "value": " outdated steps "}}},
                private_metadata=view["private_metadata"],
                view_id=view["id"],
            )
            assert await bot.send(submitted) == 200
            await bot.settle()
            assert votes(sessions) == [(-1, "button", "outdated steps")]
            assert any("Thanks, noted" in t for t in bot.ephemeral())

    run(go())


# staff -----------------------------------------------------------------------------


async def _flag(bot: Bot, user: str, correction: str, reason: str = "") -> None:
    (reply_msg,) = [m for m in bot.bot_messages() if actions_of(m)]
    shortcut = message_shortcut_payload(ui.FLAG_SHORTCUT, message=reply_msg, user=user)
    assert await bot.send(shortcut) == 200
    await bot.settle()
    view = bot.api.views()[-1]
    assert view["callback_id"] == ui.FLAG_MODAL
    values = {
        "correction": {"correction": {"type": "plain_text_input", "value": correction}},
        "reason": {"reason": {"type": "plain_text_input", "value": reason or None}},
    }
    submitted = view_submission_payload(
        ui.FLAG_MODAL,
        values,
        private_metadata=view["private_metadata"],
        view_id=view["id"],
        user=user,
    )
    assert await bot.send(submitted) == 200
    await bot.settle()


def test_staff_flag_and_correct_via_shortcut(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(
            sessions,
            staff=(f"slack:{STAFF}", "slack-group:S0SUPPORT"),
            groups={"S0SUPPORT": [GROUP_MEMBER]},
        ) as bot:
            await bot.ask("How do I export data?")
            await _flag(bot, STAFF, "Settings > Export > CSV.", "wrong menu")
            await _flag(bot, GROUP_MEMBER, "Use Settings > Export.")  # staff by user group
            with sessions() as s:
                flags = [(f.corrected_text, f.reason) for f in s.scalars(select(Flag))]
            assert flags == [
                ("Settings > Export > CSV.", "wrong menu"),
                ("Use Settings > Export.", None),
            ]
            assert sum("Flagged" in t for t in bot.ephemeral()) == 2

            # a human message is not an answer: no modal
            views = len(bot.api.views())
            human = message_shortcut_payload(ui.FLAG_SHORTCUT, text="hi", user=STAFF)
            assert await bot.send(human) == 200
            await bot.settle()
            assert len(bot.api.views()) == views
            assert any("answers only" in t for t in bot.ephemeral())

    run(go())


def test_non_staff_flag_is_refused(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions, staff=(f"slack:{STAFF}",)) as bot:
            await bot.ask("How do I export data?")
            views = len(bot.api.views())
            (reply_msg,) = [m for m in bot.bot_messages() if actions_of(m)]
            shortcut = message_shortcut_payload(
                ui.FLAG_SHORTCUT, message=reply_msg, user=DEFAULT_USER_ID
            )
            assert await bot.send(shortcut) == 200
            await bot.settle()
            assert len(bot.api.views()) == views  # refused before the form opens
            # a submission that bypasses the form is refused by the core all the same
            values = {
                "correction": {"correction": {"type": "plain_text_input", "value": "my idea"}}
            }
            forged = view_submission_payload(
                ui.FLAG_MODAL,
                values,
                user=DEFAULT_USER_ID,
                private_metadata=json.dumps(
                    {"ts": reply_msg["ts"], "channel": reply_msg.get("channel", "")}
                ),
            )
            assert await bot.send(forged) == 200
            await bot.settle()
            with sessions() as s:
                assert s.scalars(select(Flag)).all() == []
            assert any("Only support staff" in t for t in bot.ephemeral())
            # an empty form is refused by the modal itself (no round trip to the core)
            (reply_msg,) = bot.bot_messages()
            body, headers = signed_request(
                SECRET,
                view_submission_payload(
                    ui.FLAG_MODAL,
                    {"correction": {"correction": {"type": "plain_text_input", "value": ""}}},
                    private_metadata=json.dumps({"ts": reply_msg["ts"]}),
                ),
            )
            async with bot.http.post(bot.url, data=body, headers=headers) as response:
                answer = await response.json()
            assert answer["response_action"] == "errors" and "correction" in answer["errors"]

    run(go())


# maintainers -----------------------------------------------------------------------


def test_maintainer_commands(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        pending_adapters(sessions, "v1", "v2")
        async with slack_bot(sessions, maintainers=(f"slack:{MAINTAINER}",)) as bot:

            async def command(text: str, user: str = MAINTAINER) -> str:
                return await slash(bot, text, user)

            assert "Only maintainers" in await command("approve v1", user=DEFAULT_USER_ID)
            assert status_of(sessions, "v1") is AdapterStatus.PENDING
            assert "approved" in await command("approve v1")
            assert "approved" in await command("approve v2")
            assert status_of(sessions, "v2") is AdapterStatus.ACTIVE
            assert "now serving v1" in await command("rollback")
            assert status_of(sessions, "v1") is AdapterStatus.ACTIVE
            status = await command("status")
            assert status.startswith("```") and "serving: base" in status
            assert "Unknown command /chatloop frobnicate" in await command("frobnicate")
            assert "/chatloop approve &lt;version&gt;" in await command("")
            assert "Usage: /chatloop reject &lt;version&gt; [reason]" in await command("reject")

    run(go())


def test_approval_request_buttons_check_the_clicker(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        pending_adapters(sessions, "v7")
        async with slack_bot(
            sessions,
            maintainers=("slack-group:S0MAINT",),
            groups={"S0MAINT": [MAINTAINER]},
        ) as bot:
            ts = await bot.adapter.post_approval_request("v7", "win rate 0.62 vs 0.55 <b>")
            (request,) = bot.bot_messages(MAINTAINERS_CHANNEL)
            assert request["ts"] == ts
            assert "&lt;b&gt;" in section_texts(request)[0]
            buttons = {b["action_id"]: b["value"] for b in actions_of(request)}
            assert buttons == {ui.APPROVE: "v7", ui.REJECT: "v7"}

            click = block_actions_payload(
                ui.APPROVE, value="v7", message=request, channel=MAINTAINERS_CHANNEL
            )
            assert await bot.send(click) == 200  # not a maintainer
            await bot.settle()
            assert status_of(sessions, "v7") is AdapterStatus.PENDING
            assert any("Only maintainers" in t for t in bot.ephemeral(MAINTAINERS_CHANNEL))

            click = block_actions_payload(
                ui.APPROVE,
                value="v7",
                message=request,
                channel=MAINTAINERS_CHANNEL,
                user=MAINTAINER,
            )
            assert await bot.send(click) == 200
            await bot.settle()
            assert status_of(sessions, "v7") is AdapterStatus.ACTIVE
            (decided,) = bot.bot_messages(MAINTAINERS_CHANNEL)
            assert actions_of(decided) == [] and f"<@{MAINTAINER}>" in decided["text"]

    run(go())


def test_canary_reject_and_adapters_commands(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        pending_adapters(sessions, "v1", "v2", "v3")
        with transaction(sessions) as s:
            Adapters(s).transition("v1", AdapterStatus.ACTIVE, actor="test")
        async with slack_bot(sessions, maintainers=(f"slack:{MAINTAINER}",)) as bot:
            before = registry(sessions)
            # someone who is not a maintainer changes nothing
            for text in ("rollback", "canary v2 10", "reject v2 meh"):
                refused = await slash(bot, text, user=DEFAULT_USER_ID)
                assert refused == f"Only maintainers can use /chatloop {text.split()[0]}."
            assert registry(sessions) == before

            assert await slash(bot, "canary v2 5") == "🐤 v2 now answers 5% of conversations."
            assert registry(sessions)["v2"] == ("pending", 5.0)
            assert "canary: v2 at 5%" in await slash(bot, "status")

            assert await slash(bot, "reject v3 too chatty") == "❌ v3 rejected."
            listing = await slash(bot, "adapters")
            assert listing.startswith("```\n") and listing.endswith("\n```")
            rows = [line.split()[:2] for line in listing.strip("`\n").splitlines()]
            assert rows == [["v1", "active"], ["v2", "pending"], ["v3", "rejected"]]

            assert await slash(bot, "canary v2 0") == "Canary of v2 stopped."
        assert registry(sessions) == {
            "v1": ("active", 0.0),
            "v2": ("pending", 0.0),
            "v3": ("rejected", 0.0),
        }
        change = last_status_change(sessions, "v3")
        assert (change.actor, change.reason) == (f"slack:{MAINTAINER}", "too chatty")

    run(go())


def test_reject_button_on_an_approval_request(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        pending_adapters(sessions, "v8")
        async with slack_bot(sessions, maintainers=(f"slack:{MAINTAINER}",)) as bot:
            await bot.adapter.post_approval_request("v8", "win rate 0.40 vs 0.55")
            (request,) = bot.bot_messages(MAINTAINERS_CHANNEL)

            click = block_actions_payload(
                ui.REJECT, value="v8", message=request, channel=MAINTAINERS_CHANNEL
            )
            assert await bot.send(click) == 200  # not a maintainer
            await bot.settle()
            assert status_of(sessions, "v8") is AdapterStatus.PENDING
            assert any(
                "Only maintainers can use /chatloop reject" in t
                for t in bot.ephemeral(MAINTAINERS_CHANNEL)
            )
            (unchanged,) = bot.bot_messages(MAINTAINERS_CHANNEL)
            assert actions_of(unchanged) == actions_of(request)

            click = block_actions_payload(
                ui.REJECT, value="v8", message=request, channel=MAINTAINERS_CHANNEL, user=MAINTAINER
            )
            assert await bot.send(click) == 200
            await bot.settle()
            assert status_of(sessions, "v8") is AdapterStatus.REJECTED
            (decided,) = bot.bot_messages(MAINTAINERS_CHANNEL)
            assert actions_of(decided) == []
            assert "v8 rejected" in decided["text"] and f"<@{MAINTAINER}>" in decided["text"]
        assert last_status_change(sessions, "v8").actor == f"slack:{MAINTAINER}"

    run(go())


def test_approval_request_needs_a_channel(sessions: sessionmaker[Session]) -> None:
    core = Core(
        generator=ScriptedGenerator(),
        sessions=sessions,
        roles=RolePolicy(),
        config=CoreConfig(system_prompt="x"),
    )
    adapter = SlackAdapter(core=core, bot_token="xoxb-1", signing_secret="s")
    with pytest.raises(SlackConfigError):
        run(adapter.post_approval_request("v1", "summary"))
    with pytest.raises(SlackConfigError):
        SlackAdapter(core=core, bot_token="xoxb-1")  # neither HTTP nor Socket Mode
    assert SlackAdapter(core=core, bot_token="xoxb-1", app_token="xapp-1").mode == "socket"


# transport -------------------------------------------------------------------------


def test_start_fails_fast_on_refused_tokens(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with FakeSlack() as api:
            core = Core(
                generator=ScriptedGenerator(),
                sessions=sessions,
                roles=RolePolicy(),
                config=CoreConfig(system_prompt="x"),
            )
            wrong_bot = SlackAdapter(
                core=core, bot_token="xoxb-wrong", signing_secret=SECRET, api_url=api.url
            )
            with pytest.raises(SlackConfigError, match="invalid_auth"):
                await wrong_bot.start()
            await wrong_bot.stop()
            # Socket Mode is chosen by the app token; the fake refuses the connection
            socket = SlackAdapter(
                core=core, bot_token=api.bot_token, app_token=api.bot_token, api_url=api.url
            )
            assert socket.mode == "socket"
            with pytest.raises(SlackConfigError, match="not_allowed_token_type"):
                await socket.start()
            await socket.stop()
            assert [c.method for c in api.calls()] == [
                "auth.test",
                "auth.test",
                "apps.connections.open",
            ]

    run(go())


def test_events_are_acknowledged_before_the_answer_is_made(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        generator = HeldGenerator()
        async with slack_bot(sessions, generator=generator) as bot:
            mention = app_mention_event("are you quick?")
            async with asyncio.timeout(WAIT):  # a bound, not a measurement
                assert await bot.event(mention) == 200  # ... while the answer is still held
            async with asyncio.timeout(WAIT):
                await generator.asked.wait()  # the work runs after the acknowledgement
            assert bot.api.calls("chat.postMessage") == []
            generator.release.set()
            await bot.settle()
            (reply_msg,) = bot.bot_messages(thread_ts=mention["ts"])
            assert section_texts(reply_msg) == ["answer: are you quick?"]

    run(go())


def test_socket_mode_events_and_clicks_are_acked_then_handled(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    marker = "ZEBRA-4111-1111-1111-1111"

    async def go() -> None:
        generator = HeldGenerator()
        async with FakeSlack() as api:
            adapter = SlackAdapter(
                core=make_core(sessions, generator),
                bot_token=api.bot_token,
                app_token=api.app_token,
                api_url=api.url,
                min_edit_interval_s=0.0,
            )
            assert adapter.mode == "socket"
            await adapter.start()
            try:
                await api.async_wait_socket_connected()
                with pytest.raises(RuntimeError):
                    adapter.port  # noqa: B018 - no HTTP endpoint in Socket Mode

                mention = app_mention_event(f"over the socket {marker}")
                sent = await api.async_send_envelope(socket_mode_envelope(event_callback(mention)))
                ack = await api.async_wait_for_ack(sent, WAIT)
                assert ack["envelope_id"] == sent and not ack.get("payload")
                async with asyncio.timeout(WAIT):
                    await generator.asked.wait()
                assert api.calls("chat.postMessage") == []  # acked before the answer exists
                generator.release.set()
                async with asyncio.timeout(WAIT):
                    await adapter.wait_idle()
                replies = [
                    m
                    for m in api.messages(DEFAULT_CHANNEL_ID, thread_ts=mention["ts"])
                    if m.get("user") == DEFAULT_BOT_USER_ID
                ]
                (reply_msg,) = replies
                assert section_texts(reply_msg) == [f"answer: over the socket {marker}"]

                # an interaction arrives as an "interactive" envelope
                reply_id = one_reply(sessions).id
                click = parse_form_payload(
                    block_actions_payload(ui.VOTE_UP, value=str(reply_id), message=reply_msg)
                )
                sent = await api.async_send_envelope(
                    socket_mode_envelope(click, envelope_type="interactive")
                )
                await api.async_wait_for_ack(sent, WAIT)
                async with asyncio.timeout(WAIT):
                    await adapter.wait_idle()
                assert votes(sessions) == [(1, "button", None)]
            finally:
                await adapter.stop()
            assert api.socket_connections_opened == 1

    with caplog.at_level(logging.DEBUG):
        run(go())
    for record in caplog.records:  # Socket Mode payloads are not logged either
        assert all(marker not in str(value) for value in vars(record).values()), record.name


def test_a_fast_asker_is_told_privately_to_slow_down(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions, per_minute=1) as bot:
            await bot.ask("first question")
            second = await bot.ask("second question")
            assert [r.messages[-1].content for r in bot.generator.requests] == ["first question"]
            (notice,) = [
                m
                for m in bot.api.ephemeral_messages(DEFAULT_CHANNEL_ID)
                if "faster than I can answer" in m["text"]
            ]
            assert notice["recipient"] == DEFAULT_USER_ID
            assert notice["thread_ts"] == second["ts"]
            everyone = bot.api.messages(DEFAULT_CHANNEL_ID)
            assert not any("faster" in m.get("text", "") for m in everyone)

            await bot.ask("my turn", user=STAFF)  # someone else is not limited
            assert len(bot.generator.requests) == 2
            with sessions() as s:  # the limited message is kept, not answered
                assert len(s.scalars(select(Message)).all()) == 3
                assert len(s.scalars(select(Reply)).all()) == 2

    run(go())


def test_forged_and_stale_requests_get_401(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            mention = event_callback(app_mention_event("forged"))
            assert await bot.send(mention, secret="not-the-secret") == 401
            stale = int(time.time()) - 5 * 60 - 30
            assert await bot.send(mention, timestamp=stale) == 401
            unsigned = json.dumps(mention).encode()
            async with bot.http.post(bot.url, data=unsigned) as response:
                assert response.status == 401
            bad_ts = {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"}
            async with bot.http.post(bot.url, data=unsigned, headers=bad_ts) as response:
                assert response.status == 401
            await bot.settle()
            assert bot.generator.requests == []
            assert bot.api.calls("chat.postMessage") == []

    run(go())


def test_redeliveries_are_answered_once(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            envelope = event_callback(app_mention_event("only once please"))
            statuses = await asyncio.gather(
                bot.send(envelope),
                *(
                    bot.send(
                        envelope,
                        headers={"X-Slack-Retry-Num": str(n), "X-Slack-Retry-Reason": "timeout"},
                    )
                    for n in (1, 2, 3)
                ),
            )
            assert statuses == [200, 200, 200, 200]
            await bot.settle()
            assert len(bot.generator.requests) == 1
            assert len(bot.api.calls("chat.postMessage")) == 1
            with sessions() as s:
                assert len(s.scalars(select(ProcessedEvent)).all()) == 1
                assert len(s.scalars(select(Reply)).all()) == 1

    run(go())


def test_malformed_signed_bodies_get_400_and_the_bot_keeps_working(
    sessions: sessionmaker[Session],
) -> None:
    async def go() -> None:
        async with slack_bot(sessions) as bot:
            assert await bot.send_raw(b'{"type": "event_callback", "event": ') == 400
            assert await bot.send_raw(b"[1, 2, 3]") == 400
            assert await bot.send_raw(b'{"type": "event_callback", "event": "x"}') == 400
            assert await bot.send_raw(b"\xff\xfe\x00") == 400
            form = b"payload=%7Bnot+json"
            assert await bot.send_raw(form, "application/x-www-form-urlencoded") == 400
            actions = b'{"type": "block_actions", "actions": ["x"]}'
            assert await bot.send_raw(actions) == 400
            challenge = {"type": "url_verification", "challenge": "c-123", "token": "t"}
            body, headers = signed_request(SECRET, challenge)
            async with bot.http.post(bot.url, data=body, headers=headers) as response:
                assert response.status == 200 and "c-123" in await response.text()
            await bot.ask("still there?")
            (reply_msg,) = bot.bot_messages()
            assert section_texts(reply_msg) == ["answer: still there?"]

    run(go())


def test_request_bodies_are_never_logged(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    marker = "ZEBRA-4111-1111-1111-1111"

    async def go() -> None:
        async with slack_bot(sessions, edit_interval=0.0) as bot:
            await bot.ask(f"my card is {marker}")
            mention = event_callback(app_mention_event(f"forged {marker}"))
            assert await bot.send(mention, secret="wrong") == 401
            assert await bot.send_raw(f'{{"type": "{marker}", "event": 1}}'.encode()) == 400
            body = slash_command_body(
                "/chatloop", f"approve {marker}", response_url=bot.api.response_url("log")
            )
            assert await bot.send(body) == 200
            await bot.settle()
            assert bot.bot_messages() and bot.api.responses("log")

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert caplog.records
    for record in caplog.records:
        assert marker not in record.getMessage()
        assert all(marker not in str(value) for value in vars(record).values())


def test_web_api_429_and_500_are_retried(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions, edit_interval=0.0) as bot:
            bot.api.fail_next("chat.postMessage", status=429, retry_after=1)
            bot.api.fail_next("chat.update", status=500, times=2)
            mention = await bot.ask("retry me")
            posts = bot.api.calls("chat.postMessage")
            assert [c.status for c in posts] == [429, 200]
            updates = bot.api.calls("chat.update")
            assert [c.status for c in updates][-1] == 200 and 500 in [c.status for c in updates]
            (reply_msg,) = bot.bot_messages(thread_ts=mention["ts"])
            assert section_texts(reply_msg) == ["answer: retry me"] and actions_of(reply_msg)

    run(go())


def test_web_api_outage_never_crashes_the_bot(sessions: sessionmaker[Session]) -> None:
    async def go() -> None:
        async with slack_bot(sessions, edit_interval=3600) as bot:
            # retries of 429/5xx are covered above; here Slack keeps failing outright
            bot.api.fail_next("chat.postMessage", status=200, error="fatal_error", times=1000)
            await bot.ask("anyone there?")
            assert bot.bot_messages() == []
            assert any("went wrong" in t for t in bot.ephemeral())  # told, ephemerally
            bot.api.reset()  # Slack is back
            await bot.ask("and now?")
            (reply_msg,) = bot.bot_messages()
            assert section_texts(reply_msg) == ["answer: and now?"]

    run(go())


# pure parts ------------------------------------------------------------------------


def test_split_text_edges() -> None:
    assert ui.split_text("short") == ["short"]
    word = "y" * 70
    parts = ui.split_text(word, limit=32)  # one "word" longer than a part must be cut
    assert "".join(parts) == word and all(len(p) <= 32 for p in parts)
    entities = ui.split_text(ui.escape("<" * 40), limit=32)
    assert all(p.endswith(";") for p in entities)  # never inside an &entity;
    code = "intro\n```\n" + "\n".join(f"line {i}" for i in range(20)) + "\n```"
    fenced = ui.split_text(code, limit=48)
    assert len(fenced) > 1 and all(p.count("```") % 2 == 0 for p in fenced)
    prose = "One sentence here. Another one follows! " * 3
    assert ui.split_text(prose, limit=50)[0].endswith(("here.", "follows!"))


def test_plain_text_for_the_model() -> None:
    from bot.platforms.slack.translate import plain_text, split_command

    slack = "<@UBOT> ask <@U1|ann> in <#C1|general>: see <https://x.io|docs> &amp; <!here> &lt;3"
    assert plain_text(slack, bot_user_id="UBOT") == (
        "ask @ann in #general: see docs (https://x.io) & @here <3"
    )
    assert split_command('reject v3 "too chatty"') == ("reject", ("v3", "too chatty"))
    assert split_command("  ") == ("help", ())


def test_manifest_matches_the_code() -> None:
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    import bot.platforms.slack as package

    manifest = yaml.safe_load((Path(package.__file__).parent / "manifest.yml").read_text())
    (shortcut,) = manifest["features"]["shortcuts"]
    assert (shortcut["type"], shortcut["callback_id"]) == ("message", ui.FLAG_SHORTCUT)
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/chatloop"]
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im", "reaction_added", "reaction_removed"} <= events
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "commands", "usergroups:read", "reactions:read"} <= scopes
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_readme_shows_the_manifest_file() -> None:
    root = Path(__file__).resolve().parents[3]
    manifest = (root / "bot/platforms/slack/manifest.yml").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"<summary>The Slack app manifest.*?\n```yaml\n(.*?)```", readme, re.S)
    assert shown == [manifest]
