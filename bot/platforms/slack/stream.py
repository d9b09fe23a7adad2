"""One reply through Slack's streaming API for AI apps, with the edit-based sink as fallback.

Slack's "agents and AI apps" feature streams a reply into one message:
``chat.startStream`` (the first Markdown, in a thread, to a recipient user and team
outside DMs), ``chat.appendStream`` (more Markdown), ``chat.stopStream`` (the rest,
and blocks shown under the reply). slack_sdk 3.48 has these methods and a helper
around them (``AsyncWebClient.chat_stream``, which buffers 256 characters before its
first call); :class:`SlackStreamSink` calls the methods through
:class:`~bot.platforms.slack.api.SlackApi` instead, so the first words go out at
once, appends are spaced by ``min_append_interval_s`` (a 429 keeps the text for the
next append), and every failure is ours to handle.

It is used when ``CHATLOOP_SLACK_AI_STREAMING`` is on (off by default: the app needs
the feature enabled and Slack may refuse the methods in a workspace) and the reply
goes into a thread. Whenever Slack refuses (the first call, an append, the end), or
the reply grows past one streamed message (:data:`MAX_STREAM_CHARS`), or the final
text is not the streamed text plus more, the streamed message is deleted and the
reply continues through the ordinary :class:`~bot.platforms.slack.sink.SlackReplySink`
(mrkdwn, edits, parts) from the whole text so far: the person always gets the reply.

Slack renders the Markdown itself here (no mrkdwn conversion). Only Slack's own
special syntax in model text is defused: ``<!channel>``, ``<@U1>``, ``<#C1>`` get a
zero-width space after ``<`` so nothing pings or links. The feedback buttons and the
context line are the ``blocks`` of ``chat.stopStream``; the first of them carries the
reply's block id, so "Flag and correct" finds the reply as on an ordinary one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from bot.platforms.slack.api import SlackApi
from bot.platforms.slack.blocks import REPLY_BLOCK, escape, reply_blocks
from bot.platforms.slack.errors import SlackApiFailure
from bot.platforms.slack.sink import SlackReplySink

log = logging.getLogger(__name__)

MAX_STREAM_CHARS = 11_000
"""Text kept in one streamed message (each stream call takes at most 12,000)."""

_SPECIAL = re.compile(r"<(?=[!@#])")


def defuse(markdown: str) -> str:
    """Model Markdown with Slack's ``<!…>``, ``<@…>`` and ``<#…>`` syntax made inert."""
    return _SPECIAL.sub("<\u200b", markdown)


class SlackStreamSink:
    """The Slack side of one reply streamed with ``chat.*Stream``. Keyword-only."""

    def __init__(
        self,
        *,
        api: SlackApi,
        fallback: SlackReplySink,
        channel: str,
        thread_ts: str,
        user: str,
        team_id: str = "",
        min_append_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.fallback = fallback
        self.channel = channel
        self.thread_ts = thread_ts
        self.user = user
        self.team_id = team_id
        self.min_append_interval_s = min_append_interval_s
        self.clock = clock
        self.ts = ""  # the streamed message, once started
        self._text = ""  # everything the core sent
        self._sent = 0  # characters of it already streamed
        self._not_before = float("-inf")
        self.fell_back = False
        self.finished = False

    @property
    def posted(self) -> list[str]:
        """The messages showing the reply now (the adapter asks after the reply)."""
        return self.fallback.posted if self.fell_back else [self.ts] if self.ts else []

    async def delta(self, text: str) -> None:
        self._text += text
        if self.fell_back:
            await self.fallback.delta(text)
            return
        if len(self._text) > MAX_STREAM_CHARS:
            await self._fall_back("the reply outgrew one streamed message")
            return
        if not self._text.strip() or self.clock() < self._not_before:
            return
        pending = self._text[self._sent :]
        try:
            if not self.ts:
                self.ts = await self.api.start_stream(
                    channel=self.channel,
                    thread_ts=self.thread_ts,
                    markdown_text=defuse(pending),
                    recipient_user_id=self.user,
                    recipient_team_id=self.team_id,
                )
            elif pending:
                await self.api.append_stream(
                    channel=self.channel, ts=self.ts, markdown_text=defuse(pending)
                )
        except SlackApiFailure as exc:
            if exc.rate_limited and self.ts:
                self._not_before = self.clock() + max(
                    exc.retry_after or 0.0, self.min_append_interval_s
                )
                return  # the text waits for the next append
            await self._fall_back(f"{exc.method}: {exc.error}")
            return
        self._sent = len(self._text)
        self._not_before = self.clock() + self.min_append_interval_s

    async def done(self, text: str, *, reply_id: int, note: str = "") -> str | list[str]:
        if self.fell_back or not self.ts or not text.startswith(self._text[: self._sent]):
            if self.ts and not self.fell_back:
                await self._fall_back("the final text differs from the streamed one", text)
            return await self._fallback_done(text, reply_id=reply_id, note=note)
        blocks = reply_blocks(" ", reply_id=reply_id, index=0, count=1, note=escape(note))[1:]
        blocks[0]["block_id"] = f"{REPLY_BLOCK}:{reply_id}:0"
        try:
            await self.api.stop_stream(
                channel=self.channel,
                ts=self.ts,
                markdown_text=defuse(text[self._sent :]),
                blocks=blocks,
            )
        except SlackApiFailure as exc:
            await self._fall_back(f"{exc.method}: {exc.error}", text)
            return await self._fallback_done(text, reply_id=reply_id, note=note)
        self.finished = True
        return self.ts

    async def _fallback_done(self, text: str, *, reply_id: int, note: str) -> str | list[str]:
        self.fell_back = True
        posted = await self.fallback.done(text, reply_id=reply_id, note=note)
        self.finished = True
        return posted  # what the ordinary sink returns for its parts

    async def notice(self, text: str) -> None:
        if self.ts and not self.fell_back and not self.finished:
            try:
                await self.api.stop_stream(
                    channel=self.channel, ts=self.ts, markdown_text="\n\n_(answer interrupted)_"
                )
            except SlackApiFailure as exc:
                log.warning("could not stop an interrupted stream", extra={"error": exc.error})
            self.finished = True
        await self.fallback.notice(text)

    async def _fall_back(self, why: str, text: str | None = None) -> None:
        """Drop the streamed message; the ordinary sink shows the whole text from here."""
        log.info("Slack AI streaming not used for this reply", extra={"why": why})
        self.fell_back = True
        if self.ts:
            try:
                await self.api.delete_message(channel=self.channel, ts=self.ts)
            except SlackApiFailure as exc:
                log.warning("could not delete a streamed message", extra={"error": exc.error})
            self.ts = ""
        if text is None and self._text.strip():
            await self.fallback.delta(self._text)
