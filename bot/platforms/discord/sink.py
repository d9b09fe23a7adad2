"""Showing one streamed reply in a Discord channel: send, edit as tokens arrive, split.

:class:`StreamingReply` is the :class:`~bot.core.events.ReplySink` of one answer:

* the first message is sent when the first non-blank delta arrives; later deltas
  are shown by editing it, at most once per ``edit_interval`` per channel (Discord
  allows about five edits per five seconds per channel; the :class:`EditPacer` is
  shared by every reply in the process, so two replies in one thread share the
  budget),
* text longer than one message is split with :func:`split_message`; parts that are
  complete are frozen (the split is prefix-stable) and the tail keeps growing,
* :meth:`StreamingReply.done` edits every part to its final text and puts the 👍/👎
  buttons on the last part, deletes parts the final text no longer needs, and
  returns every part's message id, first part first (the last carries the buttons);
  the core stores them as the reply's parts, so a reaction or a flag on any part
  counts, after a restart too.
* :meth:`StreamingReply.notice` (rate limit, busy, errors) is about the asker. Before
  any part was shown it is a reply to the asker's message (``asker``), in the channel
  they wrote in, without a ping; ``expire`` (given in servers, not in DMs) is handed
  the posted notice to remove it later — Discord has no ephemeral answer to a message,
  so a short-lived reply is the closest to private. After a part was shown the notice
  follows the part and stays: it explains the cut-off answer to everyone.

It knows the channel to write to and the view to attach; it knows nothing of the
core's events beyond the sink protocol, nor of votes (the view is built outside).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import discord

from bot.platforms.discord.split import MESSAGE_LIMIT, split_message

log = logging.getLogger(__name__)

TYPING_EVERY_S = 8.0  # a typing indicator lasts ~10 s


class EditPacer:
    """Spaces message edits at least ``interval`` seconds apart per channel."""

    def __init__(self, *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[int, float] = {}

    def reserve(self, channel_id: int) -> float:
        """Seconds to wait before the next edit in ``channel_id`` (and book that slot)."""
        now = self.clock()
        slot = max(now, self._next.get(channel_id, 0.0))
        self._next[channel_id] = slot + self.interval
        if len(self._next) > 10_000:
            self._next = {k: v for k, v in self._next.items() if v > now}
        return slot - now


@dataclass
class _Part:
    message: discord.Message
    shown: str
    has_view: bool = False


@dataclass
class StreamingReply:
    """The sink of one reply, written to ``channel`` (a thread, a DM or a text channel)."""

    channel: discord.abc.Messageable
    channel_id: int
    pacer: EditPacer
    make_view: Callable[[int], discord.ui.View]
    reference: discord.Message | None = None
    asker: discord.Message | None = None
    expire: Callable[[discord.Message], None] | None = None
    limit: int = MESSAGE_LIMIT
    _text: str = ""
    _parts: list[_Part] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _flusher: asyncio.Task[None] | None = None
    _typing: asyncio.Task[None] | None = None
    posted: bool = False

    # typing indicator ---------------------------------------------------------------
    def start_typing(self) -> None:
        if self._typing is None:
            self._typing = asyncio.create_task(self._type(), name="chatloop-discord-typing")

    async def _type(self) -> None:
        while True:
            try:
                await self.channel.typing()
            except discord.HTTPException as exc:
                log.debug("typing indicator failed", extra={"status": exc.status})
            await asyncio.sleep(TYPING_EVERY_S)

    async def stop_typing(self) -> None:
        task, self._typing = self._typing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # the sink protocol ----------------------------------------------------------------
    async def delta(self, text: str) -> None:
        self._text += text
        if not self._text.strip():
            return
        if not self._parts:
            await self.stop_typing()
            async with self._lock:
                await self._sync(split_message(self._text, self.limit), final_view=None)
            self.pacer.reserve(self.channel_id)  # the first edit waits a full interval
            return
        if self._flusher is None or self._flusher.done():
            delay = self.pacer.reserve(self.channel_id)
            self._flusher = asyncio.create_task(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            try:
                await self._sync(split_message(self._text, self.limit), final_view=None)
            except discord.HTTPException as exc:
                # a failed intermediate edit is not fatal: the final edit shows everything
                log.warning("streaming edit failed", extra={"status": exc.status})

    async def _cancel_flusher(self) -> None:
        task, self._flusher = self._flusher, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def done(self, text: str, *, reply_id: int, note: str = "") -> list[str]:
        await self.stop_typing()
        await self._cancel_flusher()
        parts = split_message(text, self.limit) or ["(no answer)"]
        if note:  # small print under the last part ("-# " is Discord's subtext)
            last = f"{parts[-1]}\n-# {note}"
            parts[-1:] = split_message(last, self.limit) if len(last) > self.limit else [last]
        async with self._lock:
            await self._sync(parts, final_view=self.make_view(reply_id))
        return [str(p.message.id) for p in self._parts]

    async def notice(self, text: str) -> None:
        await self.stop_typing()
        await self._cancel_flusher()
        parts = split_message(text, self.limit)
        if self._parts or self.asker is None:
            for part in parts:
                await self._send(part, view=None)
            return
        asker = self.asker
        # in the asker's own channel (a reply cannot cross channels); sent as a plain
        # message if their message is gone by now
        reference = asker.to_reference(fail_if_not_exists=False)
        for part in parts:
            try:
                message = await asker.channel.send(part, reference=reference, mention_author=False)
            except discord.HTTPException:
                if asker.channel.id == self.channel_id:
                    raise
                # e.g. allowed to write in the thread but not in its parent channel
                message = await self._send(part, view=None)
            if self.expire is not None:
                self.expire(message)

    async def close(self) -> None:
        """Stop background work (typing, a pending edit) without posting anything."""
        await self.stop_typing()
        await self._cancel_flusher()

    # Discord I/O ------------------------------------------------------------------
    async def _send(self, content: str, *, view: discord.ui.View | None) -> discord.Message:
        ref = self.reference if not self.posted else None
        channel = self.channel
        if view is not None and ref is not None:
            message = await channel.send(content, view=view, reference=ref, mention_author=False)
        elif view is not None:
            message = await channel.send(content, view=view)
        elif ref is not None:
            message = await channel.send(content, reference=ref, mention_author=False)
        else:
            message = await channel.send(content)
        self.posted = True
        return message

    async def _sync(self, parts: list[str], *, final_view: discord.ui.View | None) -> None:
        """Make the posted messages show ``parts`` (the view goes on the last one)."""
        for i, content in enumerate(parts):
            last = i == len(parts) - 1
            view = final_view if last else None
            if i < len(self._parts):
                part = self._parts[i]
                wants_edit = part.shown != content or (final_view is not None and last)
                if part.has_view and view is None:
                    wants_edit = True  # the buttons move to a later part
                if wants_edit:
                    part.message = await part.message.edit(content=content, view=view)
                    part.shown, part.has_view = content, view is not None
            else:
                message = await self._send(content, view=view)
                self._parts.append(_Part(message, content, view is not None))
        if final_view is not None:
            while len(self._parts) > len(parts):
                extra = self._parts.pop()
                with contextlib.suppress(discord.HTTPException):
                    await extra.message.delete()
