"""Who is in which Slack user group, and which threads the bot takes part in.

:class:`UserGroups` answers "which user groups is U123 in?" for role resolution:
the core matches ``slack-group:<id>`` principals against
:attr:`~bot.core.events.Person.groups`. It reads every group with its members in
one ``usergroups.list(include_users=true)`` call (scope ``usergroups:read``) and
keeps the answer for ``ttl_s`` seconds (default 5 minutes), so adding someone to
the maintainers group takes effect within that time. When the call fails (no
scope, a free workspace without user groups, Slack unavailable) people get no
groups, the last good answer is kept, and it is retried after ``retry_s``: group
principals then simply do not match, individual ``slack:<user id>`` ones still do.

:class:`Threads` answers "does the bot take part in this thread?": yes if the bot has
replied in it: remembered when this process replied (bounded), else Slack is asked
(``conversations.replies``, which also covers threads answered by another replica
or before a restart). A thread under a bot message with no bot reply (an approval
request) does not count. Negative answers are not cached: the bot may join a thread
at any moment.

Neither knows the core or the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from bot.platforms.slack.api import SlackApi
from bot.platforms.slack.errors import SlackApiFailure

log = logging.getLogger(__name__)


class UserGroups:
    def __init__(
        self,
        *,
        api: SlackApi,
        ttl_s: float = 300.0,
        retry_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self.clock = clock
        self._by_user: dict[str, tuple[str, ...]] = {}
        self._fresh_until = float("-inf")
        self._lock = asyncio.Lock()

    async def of(self, user_id: str) -> tuple[str, ...]:
        """The ids of the user groups ``user_id`` belongs to (sorted; may be empty)."""
        if self.clock() >= self._fresh_until:
            async with self._lock:
                if self.clock() >= self._fresh_until:  # one refresh for concurrent callers
                    await self._refresh()
        return self._by_user.get(user_id, ())

    async def _refresh(self) -> None:
        try:
            groups = await self.api.usergroup_members()
        except SlackApiFailure as exc:
            log.warning(
                "could not read Slack user groups; group roles do not apply until it works",
                extra={"error": exc.error, "status": exc.status},
            )
            self._fresh_until = self.clock() + self.retry_s
            return
        by_user: dict[str, list[str]] = {}
        for group_id, users in groups.items():
            for user in users:
                by_user.setdefault(user, []).append(group_id)
        self._by_user = {user: tuple(sorted(ids)) for user, ids in by_user.items()}
        self._fresh_until = self.clock() + self.ttl_s


class Threads:
    def __init__(self, *, api: SlackApi, remember: int = 10_000) -> None:
        self.api = api
        self.capacity = remember
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()

    def remember(self, channel: str, thread_ts: str) -> None:
        key = (channel, thread_ts)
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > self.capacity:
            self._known.popitem(last=False)

    async def bot_takes_part(
        self, channel: str, thread_ts: str, *, bot_user_id: str, bot_id: str = ""
    ) -> bool:
        if (channel, thread_ts) in self._known:
            return True
        try:
            messages = await self.api.thread_messages(channel=channel, thread_ts=thread_ts)
        except SlackApiFailure as exc:
            log.info(
                "could not read a thread; not answering in it",
                extra={"channel": channel, "error": exc.error},
            )
            return False
        for message in messages:
            if message.get("ts") == thread_ts:
                continue  # a bot-authored parent (an approval request) is not a conversation
            user, bot = message.get("user"), message.get("bot_id")
            if (bot_user_id and user == bot_user_id) or (bot_id and bot == bot_id):
                self.remember(channel, thread_ts)
                return True
        return False
