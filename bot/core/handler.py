"""The core: from an event to a stored, streamed reply.

For a :class:`~bot.core.events.MessageEvent` the core:

1. drops redeliveries (the event id is claimed in the database, so every replica
   agrees),
2. sanitizes the text and refuses empty or oversized messages with a clear notice
   (the oversized message is still stored: nothing is lost),
3. resolves the author and their role, the conversation and its recent turns,
   and retrieves approved answers from the answer memory (``serving.memory``) for
   the question, within the prompt's token budget,
4. asks the generation backend for a reply pinned to one adapter version and
   streams it to the adapter's :class:`~bot.core.events.ReplySink`,
5. stores the reply with its adapter version, replica, latency and token counts,
   and the platform messages the sink posted it as (its parts).

Votes and flags are tied to a stored reply; one that names a platform message is
resolved through the reply's parts, so any part of a split reply counts.
Commands come from one table (:data:`bot.core.commands.COMMANDS`): the core checks
the role each needs, binds its arguments, answers help, unknown commands and usage
errors in the syntax of the surface the command came from, and runs the handler.
A flag with a corrected answer enters the answer memory at once (live for the next
message); staff manage the memory with ``/memory``.
A failure in one event is logged and answered with a notice; it never propagates
into the platform adapter's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from bot.core.commands import COMMANDS, TERMINAL, Command, Surface, bind
from bot.core.context import handles_event
from bot.core.events import (
    CommandEvent,
    FlagEvent,
    MessageEvent,
    Outcome,
    Person,
    Place,
    ReplyRef,
    ReplySink,
    VoteEvent,
)
from bot.core.memory import MemoryCommands, memory_note
from bot.core.ratelimit import RateLimiter
from bot.core.roles import RolePolicy
from bot.core.text import sanitize
from serving.errors import EngineBusy, PromptTooLong, ServingError
from serving.memory import AnswerMemory
from serving.prompt import build_messages
from serving.types import ChatMessage, GenerationParams, GenerationRequest, Generator, MemoryItem
from storage.db import transaction
from storage.errors import NotFound, StorageError
from storage.memory import MemoryEntries
from storage.models import (
    AdapterStatus,
    Conversation,
    ConversationKind,
    MemorySource,
    Reply,
    Role,
)
from storage.repositories import (
    Adapters,
    Conversations,
    FeedbackRepo,
    Flags,
    InvalidTransition,
    Messages,
    ProcessedEvents,
    Replies,
    ReplyParts,
    Users,
    Workspaces,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Behaviour of the core; built from settings by the composition root."""

    system_prompt: str
    params: GenerationParams = field(default_factory=GenerationParams)
    context_turns: int = 10
    max_message_chars: int = 8000
    user_messages_per_minute: int = 0


MEMORY_MARGIN_TOKENS = 48
"""Tokens kept free for the chat template's role markers around system and question."""


@dataclass(frozen=True, slots=True)
class _Turn:
    conversation_id: int
    message_id: int
    user_id: int
    history: list[ChatMessage]
    workspace_id: int | None = None


class Core:
    """Platform-neutral handling of messages, votes, flags and commands."""

    def __init__(
        self,
        *,
        generator: Generator,
        sessions: sessionmaker[Session],
        roles: RolePolicy,
        config: CoreConfig,
        memory: AnswerMemory | None = None,
    ) -> None:
        self.generator = generator
        self.sessions = sessions
        self.roles = roles
        self.config = config
        self.memory = memory
        self.memory_commands = MemoryCommands(memory)
        self.limiter = RateLimiter(per_minute=config.user_messages_per_minute)

    # plumbing ---------------------------------------------------------------------
    async def _db(self, fn: Callable[[Session], T]) -> T:
        def run() -> T:
            with transaction(self.sessions) as s:
                return fn(s)

        return await asyncio.to_thread(run)

    async def _claim(self, platform: str, event_id: str) -> bool:
        if not event_id:
            return True
        return await self._db(lambda s: ProcessedEvents(s).claim(platform, event_id))

    def _user(self, s: Session, platform: str, person: Person) -> tuple[int, Role]:
        role = self.roles.role_of(platform, person)
        user = Users(s).upsert(
            platform, person.user_id, display_name=person.display_name or None, role=role
        )
        return user.id, role

    def _workspace(self, s: Session, place: Place) -> int | None:
        if not place.workspace_id:
            return None
        return Workspaces(s).get_or_create(place.platform, place.workspace_id).id

    def _conversation(self, s: Session, place: Place) -> int:
        workspace_id = self._workspace(s, place)
        return (
            Conversations(s)
            .get_or_create(
                place.platform,
                place.channel_id,
                thread_id=place.thread_id,
                kind=ConversationKind(place.kind),
                workspace_id=workspace_id,
            )
            .id
        )

    # messages ---------------------------------------------------------------------
    @handles_event
    async def on_message(self, event: MessageEvent, sink: ReplySink) -> Outcome:
        """Answer one message; never raises for a bad event."""
        try:
            return await self._on_message(event, sink)
        except Exception:
            log.exception("message handling failed", extra={"event_id": event.event_id})
            text = "Sorry, something went wrong on my side. Please try again."
            await _safe_notice(sink, text)
            return Outcome(ok=False, text=text)

    async def _on_message(self, event: MessageEvent, sink: ReplySink) -> Outcome:
        place = event.place
        if not await self._claim(place.platform, event.event_id):
            log.info("duplicate event dropped", extra={"event_id": event.event_id})
            return Outcome(ok=True, text="", duplicate=True)
        text = sanitize(event.text)
        if not text:
            notice = "Your message is empty. Type a question and I will answer it."
            await sink.notice(notice)
            return Outcome(ok=False, text=notice)
        limit = self.config.max_message_chars
        if len(text) > limit:
            # keep it (nothing is lost), but do not feed it to the model
            await self._db(lambda s: self._store_message(s, event, text))
            notice = (
                f"Your message is {len(text):,} characters long; the limit is {limit:,}. "
                "Please shorten it or split it into several messages."
            )
            await sink.notice(notice)
            return Outcome(ok=False, text=notice)

        wait = self.limiter.check(f"{place.platform}:{event.author.user_id}")
        if wait > 0:
            await self._db(lambda s: self._store_message(s, event, text))
            notice = (
                f"You are sending messages faster than I can answer. Try again in {wait:.0f} s."
            )
            await sink.notice(notice)
            return Outcome(ok=False, text=notice)

        turn = await self._db(lambda s: self._begin_turn(s, event, text))
        memory = await self._recall(text, turn.workspace_id)
        messages = build_messages(
            system_prompt=self.config.system_prompt,
            history=turn.history,
            question=text,
            memory=memory,
        )
        request = GenerationRequest(
            messages=messages,
            params=self.config.params,
            conversation_key=f"{place.platform}:{place.channel_id}:{place.thread_id}",
        )
        log.info(
            "generating",
            extra={
                "event_id": event.event_id,
                "conversation_id": turn.conversation_id,
                "message_id": turn.message_id,
                "chars": len(text),
                "history_turns": len(turn.history),
                "memory_entries": [m.entry_id for m in memory],
            },
        )
        try:
            stream = self.generator.stream(request)
        except EngineBusy as exc:
            await sink.notice(f"I am busy right now ({exc}). Please try again in a minute.")
            return Outcome(ok=False, text=str(exc))
        try:
            async for delta in stream:
                await sink.delta(delta)
            result = await stream.result()
        except PromptTooLong:
            notice = "This conversation is too long for me to follow. Please start a new thread."
            await sink.notice(notice)
            return Outcome(ok=False, text=notice)
        except ServingError as exc:
            log.error("generation failed", extra={"event_id": event.event_id, "error": str(exc)})
            notice = "Sorry, I could not produce an answer. Please try again."
            await sink.notice(notice)
            return Outcome(ok=False, text=notice)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        reply_text = result.text or "(no answer)"
        params = self.config.params
        reply_id = await self._db(
            lambda s: (
                Replies(s)
                .add(
                    message_id=turn.message_id,
                    conversation_id=turn.conversation_id,
                    text=reply_text,
                    finish_reason=result.finish_reason,
                    adapter_version=result.adapter_version,
                    model_id=result.model_id,
                    replica_id=result.replica_id,
                    latency_ms=result.latency_ms,
                    ttft_ms=result.ttft_ms,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    generation={
                        "max_new_tokens": params.max_new_tokens,
                        "max_context_tokens": params.max_context_tokens,
                        "temperature": params.temperature,
                        "top_p": params.top_p,
                        "repetition_penalty": params.repetition_penalty,
                        "dropped_turns": result.dropped_turns,
                        "memory": [m.entry_id for m in memory],
                        "memory_scores": [m.score for m in memory],
                    },
                )
                .id
            )
        )
        note = memory_note([m.entry_id for m in memory])
        posted = await sink.done(reply_text, reply_id=reply_id, note=note)
        await self.record_reply_parts(reply_id, place, posted)
        log.info(
            "replied",
            extra={
                "reply_id": reply_id,
                "adapter_version": result.adapter_version,
                "latency_ms": round(result.latency_ms, 1),
                "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason,
            },
        )
        return Outcome(ok=True, text=reply_text, reply_id=reply_id)

    def _store_message(self, s: Session, event: MessageEvent, text: str) -> tuple[int, int, int]:
        user_id, _ = self._user(s, event.place.platform, event.author)
        conversation_id = self._conversation(s, event.place)
        message = Messages(s).add(
            conversation_id=conversation_id,
            user_id=user_id,
            raw_text=text,
            platform_message_id=event.platform_message_id or None,
        )
        return conversation_id, message.id, user_id

    def _begin_turn(self, s: Session, event: MessageEvent, text: str) -> _Turn:
        conversation_id, message_id, user_id = self._store_message(s, event, text)
        turns = Messages(s).recent_turns(
            conversation_id, max_turns=self.config.context_turns, before_message_id=message_id
        )
        history = [ChatMessage("user" if t.role == "user" else "assistant", t.text) for t in turns]
        workspace_id = self._workspace(s, event.place)
        return _Turn(conversation_id, message_id, user_id, history, workspace_id)

    async def _recall(self, question: str, workspace_id: int | None) -> tuple[MemoryItem, ...]:
        """Entries for the prompt, within what the context leaves after the system
        prompt, the question and the reply; none if the memory cannot be reached."""
        memory = self.memory
        if memory is None:
            return ()
        params = self.config.params
        count = memory.count_tokens
        room = (
            params.max_context_tokens
            - params.max_new_tokens
            - count(self.config.system_prompt)
            - count(question)
            - MEMORY_MARGIN_TOKENS
        )
        budget = min(memory.config.max_tokens, room)
        if budget <= 0:
            return ()
        try:
            return await asyncio.to_thread(
                memory.retrieve, question, workspace_id=workspace_id, max_tokens=budget
            )
        except (StorageError, ServingError) as exc:
            log.warning("answer memory unavailable; replying without it", extra={"error": str(exc)})
            return ()

    # reply parts ------------------------------------------------------------------
    async def record_reply_parts(
        self, reply_id: int, place: Place, posted: str | Sequence[str]
    ) -> None:
        """Store the platform messages reply ``reply_id`` was posted as in ``place``
        (one id, or every part's id first part first: what ``ReplySink.done`` returns),
        so that a vote, reaction or flag on any of them finds the reply."""
        ids = [posted] if isinstance(posted, str) else list(posted)
        ids = [i for i in ids if i]
        if not ids:
            return
        await self._db(
            lambda s: ReplyParts(s).record(
                reply_id, platform=place.platform, channel_id=place.channel_id, message_ids=ids
            )
        )

    async def find_reply(self, place: Place, platform_message_id: str) -> int | None:
        """The stored reply a platform message in ``place`` is (any part of), or None."""

        def find(s: Session) -> int | None:
            row = Replies(s).by_platform_message_id(
                place.platform, platform_message_id, channel_id=place.channel_id
            )
            return row.id if row is not None else None

        return await self._db(find)

    # feedback ---------------------------------------------------------------------
    def _resolve_reply(self, s: Session, ref: ReplyRef) -> Reply:
        replies = Replies(s)
        if ref.reply_id is not None:
            return replies.get(ref.reply_id)
        if ref.platform_message_id:
            row = replies.by_platform_message_id(
                ref.place.platform, ref.platform_message_id, channel_id=ref.place.channel_id
            )
            if row is None:
                raise NotFound("that message is not one of my answers")
            return row
        conversation_id = self._conversation(s, ref.place)
        row = replies.last_in_conversation(conversation_id)
        if row is None:
            raise NotFound("there is no answer to vote on yet; ask me something first")
        return row

    @handles_event
    async def on_vote(self, event: VoteEvent) -> Outcome:
        if not await self._claim(event.ref.place.platform, event.event_id):
            return Outcome(ok=True, text="", duplicate=True)

        def vote(s: Session) -> Outcome:
            reply = self._resolve_reply(s, event.ref)
            user_id, _ = self._user(s, event.ref.place.platform, event.voter)
            FeedbackRepo(s).vote(
                reply_id=reply.id,
                user_id=user_id,
                value=event.value,
                source=event.source,
                reason=sanitize(event.reason) if event.reason else None,
            )
            word = {1: "👍 Thanks for the feedback!", -1: "👎 Thanks, noted.", 0: "Vote removed."}
            return Outcome(ok=True, text=word[event.value], reply_id=reply.id)

        return await self._guard(vote)

    def permitted(
        self, name: str, place: Place, person: Person, surface: Surface = TERMINAL
    ) -> Outcome:
        """Whether ``person`` may run command ``name`` here: ok, or the refusal to show.

        Adapters ask before they open a form (Slack's and Discord's "Flag and
        correct"), so nobody fills in a form the core would refuse; the role and the
        wording stay here.
        """
        command = COMMANDS.get(name)
        if command is None:
            raise KeyError(f"no command {name!r} in the table")
        return self._check_role(command, place, person, surface)

    def _check_role(
        self, command: Command, place: Place, person: Person, surface: Surface
    ) -> Outcome:
        role = self.roles.role_of(place.platform, person)
        if role.rank < command.role.rank:
            return Outcome(ok=False, text=surface.refusal(command))
        return Outcome(ok=True, text="")

    @handles_event
    async def on_flag(self, event: FlagEvent) -> Outcome:
        platform = event.ref.place.platform
        allowed = self.permitted("flag", event.ref.place, event.flagger)
        if not allowed.ok:
            return allowed
        correction = sanitize(event.correction) if event.correction else None
        reason = sanitize(event.reason) if event.reason else None
        if not correction and not reason:
            return Outcome(ok=False, text="Give the right answer (or at least a reason) to flag.")
        if not await self._claim(platform, event.event_id):
            return Outcome(ok=True, text="", duplicate=True)
        actor = f"{platform}:{event.flagger.user_id}"

        def flag(s: Session) -> Outcome:
            reply = self._resolve_reply(s, event.ref)
            user_id, _ = self._user(s, platform, event.flagger)
            row = Flags(s).add(
                reply_id=reply.id, user_id=user_id, reason=reason, corrected_text=correction
            )
            entry_id = (
                self._remember(s, reply, correction, flag_id=row.id, user_id=user_id, actor=actor)
                if correction
                else None
            )
            text = "🚩 Flagged. Thanks, the correction was recorded."
            if entry_id is not None:
                text += f" It is live now as answer-memory entry #{entry_id}."
            return Outcome(ok=True, text=text, reply_id=reply.id)

        outcome = await self._guard(flag)
        if self.memory is not None:
            self.memory.invalidate()
        return outcome

    def _remember(
        self, s: Session, reply: Reply, correction: str, *, flag_id: int, user_id: int, actor: str
    ) -> int | None:
        """The corrected answer becomes an active memory entry for the flagged question."""
        message = Messages(s).get(reply.message_id)
        question = message.raw_text or message.anon_text
        if not question:
            return None
        conversation = s.get(Conversation, reply.conversation_id)
        workspace_id = conversation.workspace_id if conversation else None
        embedding = self.memory.embed_entry(question, correction) if self.memory else None
        entry = MemoryEntries(s).add(
            workspace_id=workspace_id,
            question=question,
            answer=correction,
            source=MemorySource.CORRECTION,
            actor=actor,
            created_by_user_id=user_id,
            asker_user_id=message.user_id,
            conversation_id=reply.conversation_id,
            message_id=message.id,
            reply_id=reply.id,
            flag_id=flag_id,
            embedding=embedding,
            embedding_model=self.memory.embedding_model if self.memory else None,
        )
        return entry.id

    async def _guard(self, fn: Callable[[Session], Outcome]) -> Outcome:
        try:
            return await self._db(fn)
        except (NotFound, InvalidTransition, ValueError) as exc:
            return Outcome(ok=False, text=str(exc))
        except StorageError as exc:
            log.error("storage error", extra={"error": str(exc)})
            return Outcome(ok=False, text="Sorry, I could not record that. Please try again.")

    # commands ---------------------------------------------------------------------
    @handles_event
    async def on_command(self, event: CommandEvent) -> Outcome:
        """Run a command of the table; help, refusals and usage in the event's syntax."""
        surface = event.surface
        name = event.name.lower().strip().lstrip("/") or "help"
        command = COMMANDS.get(name)
        if command is None or not surface.offers(command):
            return Outcome(ok=False, text=surface.unknown(name))
        if command.name == "help":
            return self._help(surface, event.args)
        args = event.args
        if command.subcommands:
            if args[:1] in {("help",), ("-h",)}:
                return Outcome(ok=True, text=surface.help(command=command))
            allowed = self._check_role(command, event.place, event.author, surface)
            if not allowed.ok:
                return allowed
            sub = command.subcommand(args[0]) if args else command.subcommand(command.default)
            if sub is None:
                return Outcome(ok=False, text=surface.help(command=command))
            command, args = sub, args[1:]
        allowed = self._check_role(command, event.place, event.author, surface)
        if not allowed.ok:
            return allowed
        values = bind(command, args, by_name=surface.named)
        if values is None:
            return Outcome(ok=False, text=f"Usage: {surface.usage(command)}")
        if command.on_reply:
            return await self._reply_command(command, event, values)
        if not await self._claim(event.place.platform, event.event_id):
            return Outcome(ok=True, text="", duplicate=True)
        if command.key == "memory":
            return await self._memory_command(event, command, values)
        handler = _HANDLERS[command.key]
        actor = f"{event.place.platform}:{event.author.user_id}"
        return await self._guard(lambda s: handler(self, s, actor, values))

    def _help(self, surface: Surface, args: tuple[str, ...]) -> Outcome:
        if not args:
            return Outcome(ok=True, text=surface.help())
        topic = " ".join(args).lower().lstrip("/")
        if topic.startswith(surface.prefix.strip("/ ").lower() + " "):
            topic = topic.partition(" ")[2]  # "help /chatloop approve"
        command = COMMANDS.get(topic)
        if command is None or not surface.offers(command):
            return Outcome(ok=False, text=surface.unknown(topic))
        return Outcome(ok=True, text=surface.help(command=command))

    async def _reply_command(
        self, command: Command, event: CommandEvent, values: tuple[str, ...]
    ) -> Outcome:
        """``up``/``down``/``flag``: about the last answer where the command was given."""
        ref = ReplyRef(place=event.place)
        text = values[0] if values else None
        if command.key == "flag":
            return await self.on_flag(
                FlagEvent(
                    ref=ref,
                    flagger=event.author,
                    reason=None,
                    correction=text,
                    event_id=event.event_id,
                )
            )
        return await self.on_vote(
            VoteEvent(
                ref=ref,
                voter=event.author,
                value=1 if command.key == "up" else -1,
                source="command",
                reason=text,
                event_id=event.event_id,
            )
        )

    async def _memory_command(
        self, event: CommandEvent, command: Command, values: tuple[str, ...]
    ) -> Outcome:
        platform = event.place.platform
        actor = f"{platform}:{event.author.user_id}"
        if command.word == "search":
            # retrieval reads (and may re-embed) in its own transactions
            workspace_id = await self._db(lambda s: self._workspace(s, event.place))
            return await asyncio.to_thread(self.memory_commands.search, workspace_id, values[0])

        def run(s: Session) -> Outcome:
            user_id, _ = self._user(s, platform, event.author)
            return self.memory_commands.run(
                s,
                command.word,
                values,
                actor=actor,
                user_id=user_id,
                workspace_id=self._workspace(s, event.place),
                surface=event.surface,
            )

        outcome = await self._guard(run)
        if self.memory is not None:
            self.memory.invalidate()
        return outcome

    def _cmd_status(self, s: Session, actor: str, args: tuple[str, ...]) -> Outcome:
        active = Adapters(s).active()
        pending = Adapters(s).list(statuses=[AdapterStatus.PENDING])
        canary = Adapters(s).canary()
        lines = [
            f"model: {self.generator.model_id}",
            f"serving: {self.generator.active_version}",
            f"active in registry: {active.version if active else 'base'}",
            f"awaiting approval: {', '.join(a.version for a in pending) or 'none'}",
            f"canary: {f'{canary.version} at {canary.canary_percent:g}%' if canary else 'none'}",
            f"messages stored: {Messages(s).count()}",
        ]
        return Outcome(ok=True, text="\n".join(lines))

    def _cmd_adapters(self, s: Session, actor: str, args: tuple[str, ...]) -> Outcome:
        rows = Adapters(s).list()
        if not rows:
            return Outcome(ok=True, text="No adapters yet: the base model is serving.")
        lines = [
            f"{a.version:<24} {a.status.value:<10} {'tainted ' if a.tainted else ''}"
            f"{_metric_summary(a.metrics)}"
            for a in rows
        ]
        return Outcome(ok=True, text="\n".join(lines))

    def _cmd_approve(self, s: Session, actor: str, args: tuple[str, ...]) -> Outcome:
        Adapters(s).transition(args[0], AdapterStatus.ACTIVE, actor=actor, reason="approved")
        return Outcome(ok=True, text=f"✅ {args[0]} approved and active; replicas will swap it in.")

    def _cmd_reject(self, s: Session, actor: str, args: tuple[str, ...]) -> Outcome:
        reason = " ".join(args[1:]) or "rejected by a maintainer"
        Adapters(s).transition(args[0], AdapterStatus.REJECTED, actor=actor, reason=reason)
        return Outcome(ok=True, text=f"❌ {args[0]} rejected.")

    def _cmd_canary(self, s: Session, actor: str, args: tuple[str, ...]) -> Outcome:
        try:
            percent = float(args[1].rstrip("%"))
        except ValueError:
            return Outcome(ok=False, text=f"{args[1]!r} is not a percentage")
        Adapters(s).set_canary(args[0], percent, actor=actor)
        if percent == 0:
            return Outcome(ok=True, text=f"Canary of {args[0]} stopped.")
        return Outcome(ok=True, text=f"🐤 {args[0]} now answers {percent:g}% of conversations.")

    def _cmd_rollback(self, s: Session, actor: str, args: tuple[str, ...]) -> Outcome:
        now = Adapters(s).rollback(actor=actor, reason=" ".join(args) or None)
        return Outcome(
            ok=True, text=f"↩️ Rolled back; now serving {now.version if now else 'base'}."
        )


def _metric_summary(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


_HANDLERS: dict[str, Callable[[Core, Session, str, tuple[str, ...]], Outcome]] = {
    "status": Core._cmd_status,
    "adapters": Core._cmd_adapters,
    "approve": Core._cmd_approve,
    "reject": Core._cmd_reject,
    "rollback": Core._cmd_rollback,
    "canary": Core._cmd_canary,
}


async def _safe_notice(sink: ReplySink, text: str) -> None:
    try:
        await sink.notice(text)
    except Exception:
        log.exception("could not deliver a notice")
