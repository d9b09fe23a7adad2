"""The Slack adapter: slack-bolt listeners that turn Slack payloads into core events.

What it handles, and the core call each becomes:

===================================  ===============================================
Slack                                core
===================================  ===============================================
``app_mention`` in a channel         ``on_message`` (reply in the thread)
``message`` in a DM                  ``on_message`` (reply in the DM / its thread)
``message`` in a thread the bot      ``on_message``
replied in
👍/👎 buttons on a reply             ``on_vote(source="button")``; 👎 also opens a
                                     reason modal whose submission votes again
                                     with the reason (last vote wins)
``reaction_added/removed`` +1/-1     ``on_vote(source="reaction")`` (removed = 0)
message shortcut ``chatloop_flag``   modal, then ``on_flag`` (the core checks staff)
``/chatloop <sub> ...``              ``on_command`` (the core's table in Slack syntax)
Approve / Reject buttons             ``on_command("approve"/"reject")``
===================================  ===============================================

Every listener acknowledges at once and schedules its work as a tracked task
(slack-bolt runs with ``process_before_response=True``, so it never starts
untracked work of its own): Slack gets its answer within its 3 s, failures are
logged (ids only, never text) and never reach the HTTP server, and :meth:`stop`
lets running replies finish. Idempotency is the core's: messages are claimed by
``msg:<channel>:<ts>``, reactions by Slack's ``event_id``, clicks by
``action:<action_ts>:<user>``, modals by ``view:<view id>`` and commands by
``command:<trigger_id>`` — in the database, so retries, double deliveries and
other replicas answer once.

Transport: Socket Mode when an app token is given (``AsyncSocketModeHandler``),
else the HTTP endpoint of :mod:`bot.platforms.slack.server`.

Replies: :class:`~bot.platforms.slack.sink.SlackReplySink` (mrkdwn, edits within the
workspace's shared ``chat.update`` budget, parts); with ``ai_streaming`` and a thread,
:class:`~bot.platforms.slack.stream.SlackStreamSink` (Slack's streaming API for AI
apps), which falls back to the former whenever Slack refuses.

The adapter only translates; roles, context, storage and wording of outcomes
belong to the core. It does not know the settings object: the composition root
passes plain values.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, cast

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext

from bot.core import Core, Person
from bot.core.commands import COMMANDS
from bot.platforms.slack import blocks as ui
from bot.platforms.slack import translate as tr
from bot.platforms.slack.api import SlackApi, wire_logger
from bot.platforms.slack.directory import Threads, UserGroups
from bot.platforms.slack.errors import SlackAdapterError, SlackApiFailure, SlackConfigError
from bot.platforms.slack.payloads import (
    BlockActionsPayload,
    EventEnvelope,
    MessagePayload,
    MessageShortcutPayload,
    ReactionPayload,
    SlashCommandPayload,
    ViewSubmissionPayload,
    origin,
    view_metadata,
)
from bot.platforms.slack.ratelimit import EditBudgets
from bot.platforms.slack.server import SlackHttpServer
from bot.platforms.slack.sink import SlackReplySink
from bot.platforms.slack.stream import SlackStreamSink

log = logging.getLogger(__name__)

_AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})


@dataclass(frozen=True, slots=True)
class _Bot:
    """Who the bot is in the workspace an event came from."""

    user_id: str
    bot_id: str
    team_id: str


def _bot(context: AsyncBoltContext, team_id: str | None = None) -> _Bot:
    return _Bot(
        user_id=context.bot_user_id or "",
        bot_id=context.bot_id or "",
        team_id=team_id or context.team_id or "",
    )


class SlackAdapter:
    """chatloop on Slack. Build it, ``await start()``, later ``await stop()`` (or ``run()``)."""

    def __init__(
        self,
        *,
        core: Core,
        bot_token: str,
        signing_secret: str = "",
        app_token: str = "",
        api_url: str = "https://slack.com/api/",
        http_host: str = "127.0.0.1",
        http_port: int = 3000,
        maintainers_channel: str = "",
        command: str = "/chatloop",
        min_edit_interval_s: float = 1.0,
        edits_per_minute: float = 45.0,
        ai_streaming: bool = False,
        group_ttl_s: float = 300.0,
        api_timeout_s: int = 30,
        shutdown_grace_s: float = 10.0,
    ) -> None:
        if not bot_token:
            raise SlackConfigError("a Slack bot token (xoxb-...) is required")
        if not signing_secret and not app_token:
            raise SlackConfigError(
                "set a signing secret (HTTP Events API) or an app token (Socket Mode)"
            )
        self.core = core
        self.mode: Literal["socket", "http"] = "socket" if app_token else "http"
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.http_host = http_host
        self.http_port = http_port
        self.maintainers_channel = maintainers_channel
        self.command = command if command.startswith("/") else f"/{command}"
        self.surface = tr.surface(self.command)
        self.min_edit_interval_s = min_edit_interval_s
        self.edit_budgets = EditBudgets(per_minute=edits_per_minute)
        self.ai_streaming = ai_streaming
        self.shutdown_grace_s = shutdown_grace_s
        self.api = SlackApi(token=bot_token, base_url=api_url, timeout_s=api_timeout_s)
        self.groups = UserGroups(api=self.api, ttl_s=group_ttl_s)
        self.threads = Threads(api=self.api)
        self.app = AsyncApp(
            name="chatloop",
            client=self.api.client,
            logger=wire_logger(),
            process_before_response=True,  # listeners only ack + schedule; we own the tasks
            request_verification_enabled=False,  # done by SlackHttpServer (never logs bodies)
            signing_secret=signing_secret,
        )
        self._register()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._server: SlackHttpServer | None = None
        self._socket: AsyncSocketModeHandler | None = None

    # lifecycle --------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The HTTP port actually bound (HTTP mode, after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the Slack adapter is not serving HTTP")
        return self._server.port

    async def start(self) -> None:
        """Check the token, then connect (Socket Mode) or start serving HTTP."""
        self._closing = False
        await self._check_token()
        if self.mode == "socket":
            await self._check_app_token()
            handler = AsyncSocketModeHandler(self.app, self.app_token, logger=wire_logger())
            try:
                await handler.connect_async()
            except BaseException:
                await handler.close_async()
                raise
            self._socket = handler
            log.info("Slack adapter connected (Socket Mode)")
            return
        server = SlackHttpServer(
            app=self.app,
            signing_secret=self.signing_secret,
            host=self.http_host,
            port=self.http_port,
        )
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Stop taking requests, let running work finish (``shutdown_grace_s``), close."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()  # requests still in flight are acked and scheduled
        handler, self._socket = self._socket, None
        if handler is not None:
            await handler.close_async()
        self._closing = True
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
                log.warning(
                    "cancelled unfinished Slack work at shutdown", extra={"tasks": len(late)}
                )

    async def run(self) -> None:
        """Start, serve until cancelled, stop."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def wait_idle(self) -> None:
        """Wait until no scheduled work is running; bound it with ``asyncio.timeout``."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _check_token(self) -> None:
        try:
            identity = await self.api.auth_test()
        except SlackApiFailure as exc:
            if exc.error in _AUTH_ERRORS:
                raise SlackConfigError(f"the Slack bot token was refused ({exc.error})") from exc
            log.warning("Slack auth.test failed; continuing", extra={"error": exc.error})
            return
        log.info(
            "Slack bot identified",
            extra={"team_id": identity.get("team_id"), "bot_user_id": identity.get("user_id")},
        )

    async def _check_app_token(self) -> None:
        # slack_sdk's Socket Mode client retries a refused token forever; fail fast instead
        try:
            await self.api.open_socket_url(self.app_token)
        except SlackApiFailure as exc:
            if exc.error in _AUTH_ERRORS | {"not_allowed_token_type", "invalid_app_token"}:
                raise SlackConfigError(
                    f"the Slack app token was refused ({exc.error}); "
                    "Socket Mode needs an xapp- token with connections:write"
                ) from exc
            log.warning(
                "Slack apps.connections.open failed; connecting anyway", extra={"error": exc.error}
            )

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        if self._closing:
            work.close()
            log.info("Slack work refused while stopping", extra={"work": what})
            return
        task = asyncio.create_task(self._guard(work, what), name=f"slack:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except SlackAdapterError as exc:
            log.warning("Slack work failed", extra={"work": what, "error": str(exc)})
        except Exception:
            log.exception("Slack work crashed", extra={"work": what})

    # listeners (ack + schedule only) -----------------------------------------------
    def _register(self) -> None:
        app = self.app
        for event in ("app_mention", "message", "reaction_added", "reaction_removed"):
            app.event(event)(self._on_event)
        app.action(ui.VOTE_UP)(self._on_vote_button)
        app.action(ui.VOTE_DOWN)(self._on_vote_button)
        app.view(ui.REASON_MODAL)(self._on_reason_submitted)
        app.shortcut(ui.FLAG_SHORTCUT)(self._on_flag_shortcut)
        app.view(ui.FLAG_MODAL)(self._on_flag_submitted)
        app.action(ui.APPROVE)(self._on_approval_button)
        app.action(ui.REJECT)(self._on_approval_button)
        app.command(self.command)(self._on_command)

    async def _on_event(self, body: dict[str, Any], context: AsyncBoltContext) -> None:
        envelope = cast(EventEnvelope, body)
        event = envelope.get("event") or {}
        kind = event.get("type", "")
        bot = _bot(context, envelope.get("team_id"))
        if kind in {"message", "app_mention"}:
            self._spawn(self._message(cast(MessagePayload, event), kind, bot), kind)
        elif kind in {"reaction_added", "reaction_removed"}:
            reaction = cast(ReactionPayload, event)
            event_id = envelope.get("event_id", "")
            self._spawn(self._reaction(reaction, kind == "reaction_added", event_id, bot), kind)

    async def _on_vote_button(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await ack()
        payload = cast(BlockActionsPayload, body)
        self._spawn(self._vote_button(payload, _bot(context)), "vote button")

    async def _on_reason_submitted(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await ack()
        payload = cast(ViewSubmissionPayload, body)
        self._spawn(self._reason(payload, _bot(context)), "vote reason")

    async def _on_flag_shortcut(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await ack()
        payload = cast(MessageShortcutPayload, body)
        self._spawn(self._flag_shortcut(payload, _bot(context)), "flag shortcut")

    async def _on_flag_submitted(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        payload = cast(ViewSubmissionPayload, body)
        state = cast(dict[str, Any], (payload.get("view") or {}).get("state"))
        if not ui.input_value(state, "correction") and not ui.input_value(state, "reason"):
            await ack(
                response_action="errors",
                errors={"correction": "Write the right answer, or at least a reason."},
            )
            return
        await ack()
        self._spawn(self._flag(payload, _bot(context)), "flag")

    async def _on_approval_button(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        await ack()
        payload = cast(BlockActionsPayload, body)
        self._spawn(self._approval(payload, _bot(context)), "approval button")

    async def _on_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._command(cast(SlashCommandPayload, body)), "command")

    # work -------------------------------------------------------------------------
    async def _person(self, user_id: str, name: str = "") -> Person:
        return tr.person(user_id, name, tuple(await self.groups.of(user_id)))

    async def _tell(
        self,
        *,
        channel: str,
        user: str,
        text: str,
        thread_ts: str = "",
        response_url: str = "",
        preformatted: bool = False,
    ) -> None:
        """An ephemeral answer to one person: via ``response_url`` if any, else postEphemeral."""
        if not text:
            return
        body = ui.escape(text)
        if preformatted and "\n" in body:
            body = f"```\n{body}\n```"
        if response_url:
            try:
                await self.api.respond(response_url, text=body)
                return
            except SlackApiFailure as exc:
                log.info("response_url failed; trying postEphemeral", extra={"error": exc.error})
        try:
            await self.api.post_ephemeral(
                channel=channel, user=user, text=body, thread_ts=thread_ts
            )
        except SlackApiFailure as exc:
            log.warning("could not answer a person", extra={"error": exc.error, "channel": channel})

    async def _message(self, msg: MessagePayload, event_type: str, bot: _Bot) -> None:
        kind = tr.message_kind(
            msg, event_type=event_type, bot_user_id=bot.user_id, bot_id=bot.bot_id
        )
        if kind == "ignore":
            return
        channel, thread_ts = msg.get("channel", ""), msg.get("thread_ts", "")
        if kind == "thread_reply" and not await self.threads.bot_takes_part(
            channel, thread_ts, bot_user_id=bot.user_id, bot_id=bot.bot_id
        ):
            return
        author = await self._person(msg.get("user", ""))
        event = tr.message_event(msg, team_id=bot.team_id, bot_user_id=bot.user_id, author=author)
        edits = SlackReplySink(
            api=self.api,
            channel=channel,
            user=author.user_id,
            thread_ts=event.place.thread_id,
            min_edit_interval_s=self.min_edit_interval_s,
            edit_budget=self.edit_budgets.of(bot.team_id),
        )
        sink: SlackReplySink | SlackStreamSink = edits
        if self.ai_streaming and event.place.thread_id:
            sink = SlackStreamSink(
                api=self.api,
                fallback=edits,
                channel=channel,
                thread_ts=event.place.thread_id,
                user=author.user_id,
                team_id=bot.team_id,
                min_append_interval_s=self.min_edit_interval_s,
            )
        outcome = await self.core.on_message(event, sink)
        if sink.posted and event.place.thread_id:
            self.threads.remember(channel, event.place.thread_id)
        log.info(
            "Slack message handled",
            extra={
                "event_id": event.event_id,
                "kind": kind,
                "ok": outcome.ok,
                "duplicate": outcome.duplicate,
                "reply_id": outcome.reply_id,
                "parts": len(sink.posted),
            },
        )

    async def _reaction(
        self, event: ReactionPayload, added: bool, event_id: str, bot: _Bot
    ) -> None:
        if event.get("item_user") != bot.user_id or not event.get("user"):
            return  # only reactions on the bot's messages can be votes
        if tr.reaction_value(event.get("reaction", ""), added=added) is None:
            return
        voter = await self._person(event.get("user", ""))
        vote = tr.reaction_vote(
            event, added=added, event_id=event_id, team_id=bot.team_id, voter=voter
        )
        if vote is None:
            return
        outcome = await self.core.on_vote(vote)
        log.info(
            "Slack reaction handled",
            extra={"event_id": event_id, "ok": outcome.ok, "reply_id": outcome.reply_id},
        )

    async def _vote_button(self, payload: BlockActionsPayload, bot: _Bot) -> None:
        action = (payload.get("actions") or [{}])[0]
        try:
            reply_id = int(action.get("value", ""))
        except ValueError:
            log.warning("vote button without a reply id")
            return
        who = origin(payload, team_id=bot.team_id)
        user_id, channel, team_id = who.user_id, who.channel, who.team_id
        thread_ts = (payload.get("message") or {}).get("thread_ts", "")
        place = tr.place_in(channel, thread_ts=thread_ts, team_id=team_id)
        down = action.get("action_id") == ui.VOTE_DOWN
        asked = False
        trigger = payload.get("trigger_id", "")
        if down and trigger:
            # first: the trigger id expires 3 s after the click
            metadata = {"reply": reply_id, "channel": channel, "thread": thread_ts, "team": team_id}
            try:
                await self.api.open_view(trigger_id=trigger, view=ui.reason_modal(metadata))
                asked = True
            except SlackApiFailure as exc:
                log.info("could not open the reason modal", extra={"error": exc.error})
        voter = await self._person(user_id, who.user_name)
        action_ts = action.get("action_ts") or trigger
        outcome = await self.core.on_vote(
            tr.button_vote(
                reply_id=reply_id,
                value=-1 if down else 1,
                place=place,
                voter=voter,
                event_id=f"action:{action_ts}:{user_id}",
            )
        )
        if outcome.duplicate or (outcome.ok and asked):
            return  # the modal already says the 👎 is recorded
        await self._tell(channel=channel, user=user_id, text=outcome.text, thread_ts=thread_ts)

    async def _reason(self, payload: ViewSubmissionPayload, bot: _Bot) -> None:
        view = payload.get("view") or {}
        reason = ui.input_value(cast(dict[str, Any], view.get("state")), "reason")
        meta = view_metadata(payload)
        reply_id = meta.get("reply")
        if not reason or not isinstance(reply_id, int):
            return  # the 👎 itself was recorded on the click
        who = origin(payload)
        user_id = who.user_id
        channel, thread_ts = str(meta.get("channel", "")), str(meta.get("thread", ""))
        team_id = str(meta.get("team") or bot.team_id)
        voter = await self._person(user_id, who.user_name)
        outcome = await self.core.on_vote(
            tr.button_vote(
                reply_id=reply_id,
                value=-1,
                place=tr.place_in(channel, thread_ts=thread_ts, team_id=team_id),
                voter=voter,
                event_id=f"view:{view.get('id', '')}",
                reason=reason,
            )
        )
        if not outcome.duplicate:
            await self._tell(channel=channel, user=user_id, text=outcome.text, thread_ts=thread_ts)

    async def _flag_shortcut(self, payload: MessageShortcutPayload, bot: _Bot) -> None:
        message = payload.get("message") or {}
        who = origin(payload, team_id=bot.team_id)
        user_id, channel = who.user_id, who.channel
        thread_ts = message.get("thread_ts", "")
        by_bot = (bot.user_id and message.get("user") == bot.user_id) or (
            bot.bot_id and message.get("bot_id") == bot.bot_id
        )
        if not by_bot:
            await self._tell(
                channel=channel,
                user=user_id,
                text="“Flag and correct” works on chatloop's answers only.",
                thread_ts=thread_ts,
            )
            return
        place = tr.place_in(channel, thread_ts=thread_ts, team_id=who.team_id)
        allowed = self.core.permitted("flag", place, await self._person(user_id))
        if not allowed.ok:  # the core's refusal, before a form nobody could submit
            await self._tell(channel=channel, user=user_id, text=allowed.text, thread_ts=thread_ts)
            return
        metadata = {
            "reply": ui.reply_id_in(message.get("blocks")),
            "ts": message.get("ts", "") or payload.get("message_ts", ""),
            "channel": channel,
            "thread": thread_ts,
            "team": who.team_id,
        }
        try:
            await self.api.open_view(
                trigger_id=payload.get("trigger_id", ""),
                view=ui.flag_modal(metadata, excerpt=message.get("text", "")),
            )
        except SlackApiFailure as exc:
            log.warning("could not open the flag modal", extra={"error": exc.error})
            await self._tell(
                channel=channel,
                user=user_id,
                text="Sorry, I could not open the form. Please try again.",
                thread_ts=thread_ts,
            )

    async def _flag(self, payload: ViewSubmissionPayload, bot: _Bot) -> None:
        view = payload.get("view") or {}
        state = cast(dict[str, Any], view.get("state"))
        meta = view_metadata(payload)
        who = origin(payload)
        user_id = who.user_id
        channel, thread_ts = str(meta.get("channel", "")), str(meta.get("thread", ""))
        reply_id = meta.get("reply")
        flagger = await self._person(user_id, who.user_name)
        outcome = await self.core.on_flag(
            tr.flag_event(
                place=tr.place_in(
                    channel, thread_ts=thread_ts, team_id=str(meta.get("team") or bot.team_id)
                ),
                reply_id=reply_id if isinstance(reply_id, int) else None,
                message_ts=str(meta.get("ts", "")),
                flagger=flagger,
                reason=ui.input_value(state, "reason"),
                correction=ui.input_value(state, "correction"),
                event_id=f"view:{view.get('id', '')}",
            )
        )
        if not outcome.duplicate:
            await self._tell(channel=channel, user=user_id, text=outcome.text, thread_ts=thread_ts)

    async def _command(self, payload: SlashCommandPayload) -> None:
        name, args = tr.split_command(payload.get("text", ""))
        user_id = payload.get("user_id", "")
        channel = payload.get("channel_id", "")
        response_url = payload.get("response_url", "")

        async def answer(text: str, *, preformatted: bool = False) -> None:
            await self._tell(
                channel=channel,
                user=user_id,
                text=text,
                response_url=response_url,
                preformatted=preformatted,
            )

        author = await self._person(user_id, payload.get("user_name", ""))
        outcome = await self.core.on_command(
            tr.command_event(
                name=name,
                args=args,
                place=tr.place_in(channel, team_id=payload.get("team_id", "")),
                author=author,
                event_id=f"command:{payload.get('trigger_id', '')}",
                syntax=self.surface,
            )
        )
        if outcome.duplicate:
            return
        command = COMMANDS.get(name)
        await answer(outcome.text, preformatted=bool(outcome.ok and command and command.tabular))

    async def _approval(self, payload: BlockActionsPayload, bot: _Bot) -> None:
        action = (payload.get("actions") or [{}])[0]
        version = action.get("value", "")
        who = origin(payload)
        user_id, channel = who.user_id, who.channel
        message = payload.get("message") or {}
        name = "approve" if action.get("action_id") == ui.APPROVE else "reject"
        author = await self._person(user_id, who.user_name)
        outcome = await self.core.on_command(
            tr.command_event(
                name=name,
                args=(version,),
                place=tr.place_in(channel, team_id=who.team_id),
                author=author,
                event_id=f"action:{action.get('action_ts') or payload.get('trigger_id')}:{user_id}",
                syntax=self.surface,
            )
        )
        if outcome.duplicate:
            return
        if not outcome.ok:
            await self._tell(channel=channel, user=user_id, text=outcome.text)
            return
        decided = f"{ui.escape(outcome.text)} (by <@{user_id}>)"
        try:
            await self.api.update_message(
                channel=channel,
                ts=message.get("ts", ""),
                text=decided,
                blocks=ui.decided_blocks(message.get("blocks"), decided),
            )
        except SlackApiFailure as exc:
            log.warning("could not update the approval request", extra={"error": exc.error})
            await self._tell(channel=channel, user=user_id, text=outcome.text)

    # maintainers --------------------------------------------------------------------
    async def post_approval_request(self, version: str, summary: str) -> str:
        """Post an adapter's evaluation summary with Approve / Reject buttons.

        Goes to the maintainers' channel; clicks run ``approve``/``reject`` through
        the core with the clicker's role. Returns the message ``ts``.
        """
        if not self.maintainers_channel:
            raise SlackConfigError("no maintainers channel is configured for approval requests")
        return await self.api.post_message(
            channel=self.maintainers_channel,
            text=f"Adapter {version} awaits approval",
            blocks=ui.approval_blocks(version, summary),
        )
