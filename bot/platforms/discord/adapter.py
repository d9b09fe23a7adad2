"""The Discord adapter: discord.py's gateway client in, core events out.

What it knows: Discord's objects (messages, threads, DMs, members and their roles,
reactions, interactions, app commands) as typed by discord.py, which is our edge —
raw gateway payloads are parsed there, and only discord.py models reach this module.
What it does not know: anything the core decides. It never reads the database,
never decides who is staff (it asks the core, :meth:`~bot.core.Core.permitted`,
only to avoid opening a form that would be refused), and never generates text.
What a discord.py object means for the core (places, people, questions, votes) is
:mod:`.translate`; the slash commands are generated from the core's command table
by :mod:`.commands` and registered by ``chatloop discord sync``, never at start.

Conversations
    * A mention in a guild text channel opens a **public thread from that message**
      (named after the question) and the answer streams into it. Discord gives the
      thread the message's id, so a replayed message finds the same thread. Where a
      thread cannot be created (voice-channel chat, no "Create Public Threads"
      permission) the bot answers with a Discord *reply* in the channel instead, and
      that mention is a conversation of its own.
    * In a thread the bot takes part in (it created it, is a member of it, or has
      answered in it) every message is a follow-up, no mention needed, when it listens
      in channels (``listen_in_channels``, the Message Content intent); else mentions.
    * Every DM is answered.
    * Places, people and event ids: :mod:`.translate` (the core claims event ids).

Replies stream (see :mod:`.sink`): first message on the first token, throttled
edits, the final edit carries the 👍/👎 buttons; long replies are split at 2,000
characters (see :mod:`.split`) with the buttons on the last part. The sink hands
the core every part's message id and the core stores them (``reply_parts``), so a
reaction or a flag on any part is resolved by the core, after a restart or on
another replica too; the adapter keeps no map of parts.

Feedback: 👍 records +1; 👎 records −1 at once and opens a form for an optional
reason; 👍/👎 reactions vote, removing one retracts (0). The last action wins.
Staff: the "Flag and correct" message command and ``/memory``. Maintainers:
``/status``, ``/approve`` and the other maintainer commands, and the Approve/Reject
buttons of :meth:`DiscordAdapter.post_approval_request`. Every answer to an
interaction is ephemeral.

Allow-lists (:class:`.translate.Scope`): messages, reactions and interactions from
elsewhere are ignored (interactions get a private "not enabled here").

Notices (rate limit, busy, errors) concern the asker, and a message, unlike an
interaction, cannot be answered ephemerally on Discord. So a notice before any part
of an answer is a *reply to the asker's message* (no ping) that deletes itself after
``notice_ttl_s`` in a server, and stays in a DM, which is private anyway. A notice
after part of an answer was shown stays under it, for everyone who read the part.

Logging: message text never reaches a log (:mod:`.client` keeps discord.py's payload
loggers at INFO or above).

Errors: discord.py retries 429s (honouring ``retry_after``) and 500/502/504 itself;
what still fails is logged (ids and status codes, never message text) and the
event is dropped — no exception escapes into the gateway loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Iterable
from typing import Any

import discord

from bot.core import Core, Outcome, Place, VoteEvent
from bot.core.events import ReplyRef
from bot.platforms.discord import commands as slash
from bot.platforms.discord import translate as tr
from bot.platforms.discord.client import GatewayClient, quiet_wire_loggers
from bot.platforms.discord.errors import DiscordAdapterError
from bot.platforms.discord.sink import EditPacer, StreamingReply
from bot.platforms.discord.ui import (
    Action,
    FlagModal,
    ReasonModal,
    approval_view,
    clip,
    feedback_view,
    reply_id_from_components,
    say,
)

log = logging.getLogger(__name__)

THREAD_STARTED_EXISTS = 160004  # "A thread has already been created for this message"
NOTICE_TTL_S = 60.0


class DiscordAdapter:
    """Runs one Discord bot session and hands what happens to the :class:`Core`."""

    def __init__(
        self,
        *,
        core: Core,
        token: str,
        guild_ids: Iterable[int | str] = (),
        channel_ids: Iterable[int | str] = (),
        maintainers_channel: int | str = "",
        answer_dms: bool = True,
        listen_in_channels: bool = True,
        edit_interval_s: float = 1.0,
        defer_after_s: float = 2.0,
        guild_ready_timeout_s: float = 2.0,
        max_cached_messages: int = 1000,
        notice_ttl_s: float = NOTICE_TTL_S,
    ) -> None:
        if not token:
            raise DiscordAdapterError("no Discord bot token (CHATLOOP_DISCORD_TOKEN)")
        self.core = core
        self._token = token
        self.scope = tr.Scope(
            guild_ids=guild_ids, channel_ids=channel_ids, maintainers_channel=maintainers_channel
        )
        self.maintainers_channel = self.scope.maintainers_channel
        self.answer_dms = answer_dms
        self.listen_in_channels = listen_in_channels
        self.defer_after_s = defer_after_s
        self.notice_ttl_s = notice_ttl_s
        self.pacer = EditPacer(interval=edit_interval_s)
        quiet_wire_loggers()
        self.client = GatewayClient(
            self,
            intents=tr.intents(listen_in_channels=listen_in_channels),
            allowed_mentions=discord.AllowedMentions.none(),  # model output never pings
            max_messages=max_cached_messages,
            guild_ready_timeout=guild_ready_timeout_s,
            chunk_guilds_at_startup=False,
        )
        slash.install(self.client.tree)
        self._threads: set[int] = set()  # threads we answered in (this process)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending_down: dict[tuple[int, int], asyncio.Task[Outcome]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # lifecycle ------------------------------------------------------------------------
    async def start(self, *, ready_timeout_s: float = 60.0) -> None:
        """Log in, connect the gateway in the background, return once ready.

        Raises :class:`DiscordAdapterError` for a rejected token, a missing privileged
        intent, or no READY within ``ready_timeout_s``.
        """
        try:
            await self.client.login(self._token)
        except discord.LoginFailure:
            await self.client.close()
            raise DiscordAdapterError(
                "Discord rejected the bot token (CHATLOOP_DISCORD_TOKEN)"
            ) from None
        except (discord.HTTPException, OSError) as exc:
            await self.client.close()
            raise DiscordAdapterError(f"cannot reach Discord to log in: {exc}") from exc
        self._runner = asyncio.create_task(self._connect(), name="chatloop-discord-gateway")
        ready = asyncio.create_task(self.client.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._runner}, timeout=ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if ready in done:
            return
        ready.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ready
        if self._runner in done:
            self._runner.result()  # raises the mapped error
        await self.close()
        raise DiscordAdapterError(f"the Discord gateway was not ready after {ready_timeout_s:g} s")

    async def _connect(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise DiscordAdapterError(
                "Discord refused the Message Content intent: enable it for the bot in the "
                "Developer Portal (Bot > Privileged Gateway Intents)"
            ) from None
        except discord.ConnectionClosed as exc:
            raise DiscordAdapterError(
                f"the Discord gateway closed the connection ({exc.code})"
            ) from exc

    async def wait_closed(self) -> None:
        """Until the gateway connection ends (after :meth:`close`, or a fatal error)."""
        if self._runner is not None:
            await self._runner

    async def close(self) -> None:
        """Stop answering, finish or cancel running handlers, disconnect."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError, DiscordAdapterError):
                await self._runner

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(f"chatloop-discord-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, coro: Awaitable[None], what: str) -> None:
        """Run one event's handling as a tracked task; log (never raise) its failure."""
        if self._closing:
            if asyncio.iscoroutine(coro):
                coro.close()
            return
        task = self._spawn(coro, what)
        try:
            await task
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except discord.HTTPException as exc:
            log.error(
                "discord request failed while handling an event",
                extra={"event": what, "status": exc.status, "code": exc.code},
            )
        except Exception:
            log.exception("discord event handling failed", extra={"event": what})

    async def _on_ready(self) -> None:
        user = self.client.user
        log.info(
            "discord ready",
            extra={"bot_user_id": user.id if user else None, "guilds": len(self.client.guilds)},
        )

    # places and permissions -------------------------------------------------------------
    @property
    def _me(self) -> discord.ClientUser:
        user = self.client.user
        if user is None:
            raise RuntimeError("the Discord client is not logged in")
        return user

    async def _parent_of(self, channel_id: int, channel: object = None) -> int | None:
        """The parent channel of a thread; None for a channel (or one we cannot see)."""
        if not isinstance(channel, discord.Thread):
            channel = self.client.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.client.fetch_channel(channel_id)
            except discord.HTTPException as exc:
                log.info(
                    "cannot look up a channel",
                    extra={"channel_id": channel_id, "status": exc.status},
                )
                return None
        return channel.parent_id if isinstance(channel, discord.Thread) else None

    async def _place_allowed(
        self,
        guild_id: int | None,
        channel_id: int | None,
        channel: object = None,
        *,
        maintainers: bool = False,
    ) -> bool:
        """The allow-lists for a reaction or an interaction (DMs are always allowed).

        ``maintainers``: the maintainers channel (and its threads) counts as allowed.
        """
        if guild_id is None:
            return True
        if not self.scope.guild(guild_id) or channel_id is None:
            return self.scope.guild(guild_id) and not self.scope.channel_ids
        if self.scope.channel(channel_id, maintainers=maintainers):
            return True
        parent = await self._parent_of(channel_id, channel)
        return parent is not None and self.scope.channel(
            channel_id, parent, maintainers=maintainers
        )

    def _takes_part(self, thread: discord.Thread) -> bool:
        return thread.owner_id == self._me.id or thread.me is not None or thread.id in self._threads

    # messages -----------------------------------------------------------------------
    async def _on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id is not None:
            return
        if message.type not in tr.ANSWERED_TYPES:
            return
        channel = message.channel
        reference: discord.Message | None = None
        target: discord.abc.Messageable
        if isinstance(channel, discord.DMChannel):
            if not self.answer_dms:
                return
            place, target = tr.dm_place(channel.id), channel
        elif message.guild is not None:
            if not self.scope.guild(message.guild.id):
                return
            if isinstance(channel, discord.Thread):
                if not self.scope.channel(channel.id, channel.parent_id):
                    return
                if not (
                    tr.mentions(message, self._me.id)
                    or (self.listen_in_channels and self._takes_part(channel))
                ):
                    return
                place, target = tr.thread_place(channel), channel
            else:
                if not self.scope.channel(channel.id) or not tr.mentions(message, self._me.id):
                    return
                thread = await self._thread_for(message)
                if thread is not None:
                    place, target = tr.thread_place(thread), thread
                else:
                    place = tr.channel_place(channel.id, message.guild.id, str(message.id))
                    target, reference = channel, message
        else:
            return
        await self._answer_message(message, place, target, reference)

    async def _answer_message(
        self,
        message: discord.Message,
        place: Place,
        target: discord.abc.Messageable,
        reference: discord.Message | None,
    ) -> None:
        channel_id = int(place.channel_id)
        sink = StreamingReply(
            channel=target,
            channel_id=channel_id,
            pacer=self.pacer,
            make_view=feedback_view,
            reference=reference,
            asker=message,
            expire=None if place.kind == "dm" else self._expire_later,
        )
        event = tr.message_event(message, place, self._me.id)
        sink.start_typing()
        try:
            outcome = await self.core.on_message(event, sink)
        finally:
            await sink.close()
        if place.kind == "thread" and not outcome.duplicate:
            self._threads.add(channel_id)
        log.info(
            "discord message handled",
            extra={
                "message_id": message.id,
                "reply_id": outcome.reply_id,
                "ok": outcome.ok,
                "duplicate": outcome.duplicate,
                "kind": place.kind,
            },
        )

    def _expire_later(self, message: discord.Message) -> None:
        """Delete a notice after ``notice_ttl_s`` (cancelled, and kept, at shutdown)."""

        async def expire() -> None:
            await asyncio.sleep(self.notice_ttl_s)
            try:
                await message.delete()
            except discord.HTTPException as exc:
                log.info("cannot delete a notice", extra={"status": exc.status})

        self._spawn(expire(), "notice-expiry")

    async def _thread_for(self, message: discord.Message) -> discord.Thread | None:
        """The thread started from ``message``: found, created, or None (reply in channel)."""
        guild = message.guild
        if guild is None or not isinstance(message.channel, discord.TextChannel):
            return None
        existing = guild.get_thread(message.id)  # a replay after RESUME: already made
        if existing is not None:
            return existing
        name = re.sub(r"\s+", " ", tr.question(message, self._me.id)).strip()[:90] or "chatloop"
        try:
            return await message.create_thread(name=name)
        except discord.HTTPException as exc:
            if exc.code == THREAD_STARTED_EXISTS:
                with contextlib.suppress(discord.HTTPException):
                    channel = await self.client.fetch_channel(message.id)
                    if isinstance(channel, discord.Thread):
                        return channel
            log.warning(
                "cannot start a thread; replying in the channel",
                extra={"channel_id": message.channel.id, "status": exc.status, "code": exc.code},
            )
            return None

    # reactions ------------------------------------------------------------------------
    async def _on_reaction(self, payload: discord.RawReactionActionEvent, *, added: bool) -> None:
        value = tr.vote_value(payload.emoji)
        if value is None:
            return
        me = self._me.id
        if payload.user_id == me or not self.scope.guild(payload.guild_id):
            return
        if payload.message_author_id is not None and payload.message_author_id != me:
            return
        if not await self._place_allowed(payload.guild_id, payload.channel_id):
            return
        place = tr.reaction_place(payload, self.client.get_channel(payload.channel_id))
        voter = tr.reaction_voter(payload)
        outcome = await self.core.on_vote(
            VoteEvent(
                # the core finds the reply from any of its parts (or says it is none)
                ref=ReplyRef(place=place, platform_message_id=str(payload.message_id)),
                voter=voter,
                value=value if added else 0,
                source="reaction",
            )
        )
        log.info(
            "discord reaction vote",
            extra={
                "message_id": payload.message_id,
                "reply_id": outcome.reply_id,
                "value": value if added else 0,
                "ok": outcome.ok,
            },
        )

    # interactions: answering ---------------------------------------------------------
    async def _respond(self, interaction: discord.Interaction, outcome: Outcome) -> None:
        if outcome.duplicate and not outcome.text:
            return  # a replayed interaction: it was answered the first time
        await say(interaction, outcome.text or "Done.")

    async def _answer(self, interaction: discord.Interaction, work: Awaitable[Outcome]) -> Outcome:
        """Await the core; defer first if it is slow (Discord wants an answer in 3 s)."""
        task = self._spawn(work, "interaction")
        done, _ = await asyncio.wait({task}, timeout=self.defer_after_s)
        if not done and not interaction.response.is_done():
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            outcome: Outcome = await task
        except Exception:
            log.exception("interaction handling failed", extra={"interaction_id": interaction.id})
            outcome = Outcome(ok=False, text="Sorry, something went wrong on my side.")
        await self._respond(interaction, outcome)
        return outcome

    async def _refuse_elsewhere(self, interaction: discord.Interaction) -> bool:
        """Answer (and True) for an interaction from outside the allow-lists."""
        if not self.scope.guild(interaction.guild_id):
            await say(interaction, "chatloop is not enabled in this server.")
            return True
        allowed = await self._place_allowed(
            interaction.guild_id, interaction.channel_id, interaction.channel, maintainers=True
        )
        if not allowed:
            await say(interaction, "chatloop is not enabled in this channel.")
            return True
        return False

    # interactions: votes ---------------------------------------------------------------
    async def on_vote_button(
        self, interaction: discord.Interaction, *, reply_id: int, value: int
    ) -> None:
        if await self._refuse_elsewhere(interaction):
            return
        event = tr.interaction_vote(interaction, reply_id=reply_id, value=value)
        if value > 0:
            await self._answer(interaction, self.core.on_vote(event))
            return
        # 👎: the form answers the click; the vote counts even if the form is dismissed
        await interaction.response.send_modal(
            ReasonModal(reply_id=reply_id, opener_id=interaction.user.id)
        )
        key = (interaction.user.id, reply_id)
        task: asyncio.Task[Outcome] = self._spawn(self.core.on_vote(event), "vote")
        self._pending_down[key] = task

        def forget(done: asyncio.Task[Outcome]) -> None:
            if self._pending_down.get(key) is done:
                del self._pending_down[key]

        task.add_done_callback(forget)

    async def on_vote_reason(
        self, interaction: discord.Interaction, *, reply_id: int, reason: str
    ) -> None:
        if await self._refuse_elsewhere(interaction):
            return
        pending = self._pending_down.pop((interaction.user.id, reply_id), None)
        if pending is not None:  # the click's vote first, so the reason lands last
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(pending), timeout=self.defer_after_s)
        event = tr.interaction_vote(interaction, reply_id=reply_id, value=-1, reason=reason)
        await self._answer(interaction, self.core.on_vote(event))

    # interactions: staff flags ---------------------------------------------------------
    async def flag_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """The "Flag and correct" message command: the form, for staff only."""
        if await self._refuse_elsewhere(interaction):
            return
        place = tr.interaction_place(interaction)
        flagger = tr.person_of(interaction.user)
        if message.author.id != self._me.id:
            await say(interaction, "That message is not one of my answers.")
            return
        # the last part carries the reply id in its buttons; the core knows every part
        reply_id = reply_id_from_components(message.components)
        if reply_id is None:
            where = Place(platform=tr.PLATFORM, channel_id=str(message.channel.id), kind=place.kind)
            reply_id = await self.core.find_reply(where, str(message.id))
        if reply_id is None:
            await say(interaction, "That message is not one of my answers.")
            return
        allowed = self.core.permitted("flag", place, flagger)
        if not allowed.ok:  # the core's refusal, before a form nobody could submit
            await self._respond(interaction, allowed)
            return
        await interaction.response.send_modal(
            FlagModal(reply_id=reply_id, opener_id=interaction.user.id)
        )

    async def on_flag_submit(
        self, interaction: discord.Interaction, *, reply_id: int, reason: str, correction: str
    ) -> None:
        if await self._refuse_elsewhere(interaction):
            return
        event = tr.interaction_flag(
            interaction, reply_id=reply_id, reason=reason, correction=correction
        )
        await self._answer(interaction, self.core.on_flag(event))

    # interactions: maintainers --------------------------------------------------------
    async def run_command(
        self, interaction: discord.Interaction, name: str, args: tuple[str, ...] = ()
    ) -> Outcome | None:
        """A command of the core's table (a slash command or an approval button)."""
        if await self._refuse_elsewhere(interaction):
            return None
        event = tr.interaction_command(interaction, name, args, slash.SURFACE)
        return await self._answer(interaction, self.core.on_command(event))

    async def on_approval_button(
        self, interaction: discord.Interaction, *, action: Action, version: str
    ) -> None:
        outcome = await self.run_command(interaction, action, (version,))
        message = interaction.message
        if outcome is None or not outcome.ok or outcome.duplicate or message is None:
            return
        note = f"{outcome.text} (by {interaction.user.mention})"
        try:
            await message.edit(content=clip(f"{message.content}\n{note}"), view=None)
        except discord.HTTPException as exc:
            log.warning("cannot update the approval request", extra={"status": exc.status})

    async def post_approval_request(self, version: str, summary: str) -> str:
        """Post "``version`` awaits approval" with Approve/Reject buttons; the message id.

        Clicks become ``approve``/``reject`` commands, role-checked by the core.
        """
        if not self.maintainers_channel:
            raise DiscordAdapterError(
                "no maintainers channel configured (CHATLOOP_DISCORD_MAINTAINERS_CHANNEL)"
            )
        view = approval_view(version)  # ValueError for a version that cannot be a button id
        text = clip(f"🧪 **Adapter `{version}` is waiting for approval**\n{summary.strip()}")
        channel = self.client.get_partial_messageable(self.maintainers_channel)
        try:
            message = await channel.send(text, view=view)
        except discord.HTTPException as exc:
            raise DiscordAdapterError(
                f"cannot post to the maintainers channel {self.maintainers_channel} "
                f"(HTTP {exc.status}, code {exc.code})"
            ) from exc
        return str(message.id)
