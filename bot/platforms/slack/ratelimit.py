"""One ``chat.update`` budget per workspace, shared by every reply streaming there.

Slack limits Web API methods per method and per workspace: ``chat.update`` is a
Tier 3 method, "50+ requests per minute", with occasional bursts tolerated
(docs.slack.dev, "Rate limits"; a call over the limit gets HTTP 429 with
``Retry-After``). Each :class:`~bot.platforms.slack.sink.SlackReplySink` already
edits its own message at most about once a second, but twenty replies streaming at
once in one workspace would still ask for twenty edits a second. An
:class:`EditBudget` is a token bucket for one workspace (``per_minute`` tokens a
minute, at most ``burst`` saved up) that *coalesces*:

- A stream does not queue edits, it marks itself dirty with :meth:`EditBudget.offer`
  and a callable that renders *its text at the moment it runs*. A stream that
  offers again while it waits keeps its place in line and still costs one edit:
  its newer text replaces the older one.
- One worker task per budget (started on demand, ended when nothing waits) runs
  the waiting streams one at a time, in the order they first offered, whenever a
  token is there, so every stream gets its turn and none starves. An edit pays
  :meth:`EditBudget.charge` for each ``chat.update`` it actually makes (usually
  one; none if its text did not change; two when a part is finished and the next
  one begins).
- The final edit of a reply never waits: :meth:`EditBudget.settle` drops the
  stream's pending interim edit and waits for one that is running, then the sink
  sends the final parts itself and pays for them the same way, which may run the
  bucket into debt; interim edits of every stream then wait until the debt is
  paid. So the buttons always arrive at once, and over any
  window the workspace's ``chat.update`` calls stay within ``burst + per_minute``
  per minute plus the finals of replies ending in that window.

Posting (``chat.postMessage``, a different method with its own limit) is not
counted here. The default of 45 a minute leaves room below Slack's 50 for the
approval announcer's edits and for other replicas; with R replicas in one
workspace, each should get about 45 / R (``SlackAdapter(edits_per_minute=...)``).

It knows nothing of Slack's API or of the core: it schedules callables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

Edit = Callable[[], Awaitable[None]]


class EditBudget:
    """A coalescing token bucket for one workspace's ``chat.update`` calls."""

    def __init__(
        self,
        *,
        per_minute: float = 45.0,
        burst: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.per_second = per_minute / 60.0
        self.burst = burst
        self.clock = clock
        self._tokens = burst
        self._updated = clock()
        self._pending: dict[Hashable, Edit] = {}  # insertion order = turn order
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._worker: asyncio.Task[None] | None = None
        self.spent = 0  # calls charged so far

    # the bucket -----------------------------------------------------------------
    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now

    @property
    def tokens(self) -> float:
        """Tokens available now (negative: debt from final edits)."""
        self._refill()
        return self._tokens

    def charge(self, edits: int = 1) -> None:
        """Pay for ``edits`` calls just made; final edits may run the bucket into debt."""
        self._refill()
        self._tokens -= edits
        self.spent += edits

    # streams ----------------------------------------------------------------------
    def offer(self, key: Hashable, edit: Edit) -> None:
        """Mark stream ``key`` dirty: ``edit`` runs when its turn and a token come.

        A stream already waiting keeps its place; its edit is replaced by this one.
        """
        self._pending[key] = edit
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="slack:edit-budget")

    def waiting(self, key: Hashable) -> bool:
        return key in self._pending

    async def settle(self, key: Hashable) -> None:
        """Drop ``key``'s waiting edit and wait for its running one (before a final edit)."""
        self._pending.pop(key, None)
        task = self._running.get(key)
        if task is not None:
            await asyncio.wait([task])

    async def _work(self) -> None:
        while self._pending:
            self._refill()
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.per_second)
                continue
            key = next(iter(self._pending))
            edit = self._pending.pop(key)
            task = asyncio.create_task(self._run(edit), name="slack:coalesced-edit")
            self._running[key] = task
            try:
                await asyncio.wait([task])
            finally:
                self._running.pop(key, None)

    @staticmethod
    async def _run(edit: Edit) -> None:
        try:
            await edit()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a coalesced streaming edit failed")


class EditBudgets:
    """One :class:`EditBudget` per workspace, made on first use."""

    def __init__(self, *, per_minute: float = 45.0, burst: float = 5.0) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._budgets: dict[str, EditBudget] = {}

    def of(self, workspace: str) -> EditBudget:
        budget = self._budgets.get(workspace)
        if budget is None:
            budget = EditBudget(per_minute=self.per_minute, burst=self.burst)
            self._budgets[workspace] = budget
        return budget
