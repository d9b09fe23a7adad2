"""One reply streamed into Slack: post on the first text, edit as it grows, finish with buttons.

:class:`SlackReplySink` implements the core's :class:`~bot.core.events.ReplySink`:

- ``delta``: the first non-blank text posts a message (``chat.postMessage``, in the
  thread); later text edits it (``chat.update``) at most once per
  ``min_edit_interval_s`` per reply (Slack allows roughly one edit per second per
  message). Interim edits are best effort: a failure or a 429 skips that edit and
  backs off (``Retry-After``) instead of holding up generation; the final edit
  carries the whole text anyway. With an ``edit_budget`` (the workspace's
  :class:`~bot.platforms.slack.ratelimit.EditBudget`) the edits after the first
  post wait for the workspace's shared ``chat.update`` budget, coalesced: a
  waiting edit shows the newest text when it runs; the final parts never wait.
  Text beyond one part (2,900 characters) continues in further messages of the
  thread as it streams.
- The model writes Markdown; every edit shows the text so far as Slack mrkdwn
  (:func:`~bot.platforms.slack.markdown.to_mrkdwn`: escaped, half-written
  constructs shown sanely), and so does the final text.
- ``done``: the complete text, split at paragraph/sentence/word boundaries
  (:func:`~bot.platforms.slack.blocks.split_text`), replaces what was streamed;
  missing parts are posted, surplus ones deleted, and the last part carries the
  👍/👎 buttons and a context line. Returns every part's ``ts``, first part first,
  which the core stores as the reply's parts, so a reaction or a flag on any part
  finds the reply. These calls are retried (429, 5xx) and raise
  :class:`~bot.platforms.slack.errors.SlackApiFailure` if they still fail.
- ``notice``: an ephemeral message to the asker (``chat.postEphemeral``), else a
  message in the thread; a reply cut off mid-stream loses its cursor and says so.

It knows the Web API calls and Block Kit; it knows nothing of Slack's inbound
payloads or of how the core produces text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bot.platforms.slack.api import SlackApi
from bot.platforms.slack.blocks import (
    PART_CHARS,
    STREAMING_CURSOR,
    escape,
    reply_blocks,
    split_text,
    streaming_blocks,
)
from bot.platforms.slack.errors import SlackApiFailure
from bot.platforms.slack.markdown import to_mrkdwn
from bot.platforms.slack.ratelimit import EditBudget

log = logging.getLogger(__name__)


class SlackReplySink:
    """The Slack side of one streamed reply. Keyword-only construction."""

    def __init__(
        self,
        *,
        api: SlackApi,
        channel: str,
        user: str,
        thread_ts: str = "",
        min_edit_interval_s: float = 1.0,
        part_chars: int = PART_CHARS,
        clock: Callable[[], float] = time.monotonic,
        edit_budget: EditBudget | None = None,
    ) -> None:
        self.api = api
        self.channel = channel
        self.user = user
        self.thread_ts = thread_ts or None
        self.min_edit_interval_s = min_edit_interval_s
        self.part_chars = part_chars
        self.clock = clock
        self.edit_budget = edit_budget
        self.posted: list[str] = []  # ts of each part posted so far
        self._shown: list[str] = []  # text each posted part shows now
        self._text = ""
        self._not_before = float("-inf")
        self.finished = False

    # streaming --------------------------------------------------------------------
    async def delta(self, text: str) -> None:
        self._text += text
        if self.clock() < self._not_before or not self._text.strip():
            return
        if self.edit_budget is not None and self.posted:
            self.edit_budget.offer(self, self._stream_edit)  # coalesced with newer text
            return
        await self._stream_edit()

    async def _stream_edit(self) -> None:
        """Show the text so far (at the moment this runs) with the streaming cursor."""
        if self.finished:
            return
        now = self.clock()
        parts = split_text(to_mrkdwn(self._text), self.part_chars)
        try:
            for index, part in enumerate(parts):
                shown = part + STREAMING_CURSOR if index == len(parts) - 1 else part
                await self._show(index, shown, streaming_blocks(shown), best_effort=True)
        except SlackApiFailure as exc:
            backoff = exc.retry_after if exc.rate_limited and exc.retry_after else None
            self._not_before = now + max(backoff or 0.0, self.min_edit_interval_s)
            log.warning(
                "skipped a streaming edit",
                extra={"method": exc.method, "error": exc.error, "channel": self.channel},
            )
            return
        self._not_before = self.clock() + self.min_edit_interval_s

    async def _show(
        self, index: int, text: str, blocks: list[dict[str, Any]], *, best_effort: bool
    ) -> None:
        if index < len(self.posted):
            if self._shown[index] == text and best_effort:
                return
            await self.api.update_message(
                channel=self.channel,
                ts=self.posted[index],
                text=text,
                blocks=blocks,
                best_effort=best_effort,
            )
            self._shown[index] = text
            if self.edit_budget is not None:
                self.edit_budget.charge()
            return
        ts = await self.api.post_message(
            channel=self.channel, text=text, blocks=blocks, thread_ts=self.thread_ts
        )
        self.posted.append(ts)
        self._shown.append(text)

    # the end ----------------------------------------------------------------------
    async def done(self, text: str, *, reply_id: int, note: str = "") -> list[str]:
        if self.edit_budget is not None:
            await self.edit_budget.settle(self)  # no interim edit after (or during) the final
        parts = split_text(to_mrkdwn(text), self.part_chars) or ["(no answer)"]
        count = len(parts)
        for index, part in enumerate(parts):
            blocks = reply_blocks(
                part, reply_id=reply_id, index=index, count=count, note=escape(note)
            )
            await self._show(index, part, blocks, best_effort=False)
        for ts in self.posted[count:]:
            try:
                await self.api.delete_message(channel=self.channel, ts=ts)
            except SlackApiFailure as exc:
                log.warning("could not delete a surplus reply part", extra={"error": exc.error})
        del self.posted[count:], self._shown[count:]
        self.finished = True
        return list(self.posted)

    async def notice(self, text: str) -> None:
        if self.posted and not self.finished:
            if self.edit_budget is not None:
                await self.edit_budget.settle(self)
            await self._mark_interrupted()
        body = escape(text)
        try:
            await self.api.post_ephemeral(
                channel=self.channel, user=self.user, text=body, thread_ts=self.thread_ts
            )
            return
        except SlackApiFailure as exc:
            log.info(
                "ephemeral notice failed; posting it in the thread", extra={"error": exc.error}
            )
        await self.api.post_message(channel=self.channel, text=body, thread_ts=self.thread_ts)

    async def _mark_interrupted(self) -> None:
        index = len(self.posted) - 1
        text = self._shown[index].removesuffix(STREAMING_CURSOR) + "\n_(answer interrupted)_"
        try:
            await self._show(index, text, streaming_blocks(text), best_effort=False)
        except SlackApiFailure as exc:
            log.warning("could not mark an interrupted reply", extra={"error": exc.error})
