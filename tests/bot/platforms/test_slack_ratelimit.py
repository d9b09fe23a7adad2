"""The workspace's shared ``chat.update`` budget (bot.platforms.slack.ratelimit).

The budget's own rules with real time at a high rate, then many replies streaming at
once through real :class:`SlackReplySink` objects into the local fake of Slack's Web
API (tests/fakes/slack_api.py): the edits they make together stay within the budget,
and every reply ends with its whole text and its buttons.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.platforms.slack.api import SlackApi
from bot.platforms.slack.blocks import REPLY_BLOCK
from bot.platforms.slack.markdown import to_mrkdwn
from bot.platforms.slack.ratelimit import Edit, EditBudget, EditBudgets
from bot.platforms.slack.sink import SlackReplySink
from tests.conftest import run
from tests.fakes.slack_api import DEFAULT_CHANNEL_ID, FakeSlackAPI


def test_a_waiting_stream_is_coalesced_to_its_newest_edit() -> None:
    async def go() -> None:
        budget = EditBudget(per_minute=60 * 50, burst=1)
        ran: list[str] = []
        b_ran = asyncio.Event()

        def edit(label: str) -> Edit:
            async def run_it() -> None:
                ran.append(label)
                budget.charge()
                if label.startswith("b"):
                    b_ran.set()

            return run_it

        budget.offer("a", edit("a1"))
        budget.offer("b", edit("b1"))
        budget.offer("a", edit("a2"))  # replaces a1, keeps a's turn before b
        assert budget.waiting("a") and budget.waiting("b")
        budget.offer("c", edit("c1"))
        await budget.settle("c")  # a final edit is coming: c's interim edit is dropped
        await asyncio.wait_for(b_ran.wait(), timeout=5)
        await budget.settle("b")
        assert ran == ["a2", "b1"]
        assert budget.spent == 2

    run(go())


def test_final_edits_never_wait_but_interim_ones_pay_their_debt() -> None:
    async def go() -> None:
        budget = EditBudget(per_minute=60 * 20, burst=1)  # 20 a second
        budget.charge(5)  # five final edits at once: 4 in debt
        assert budget.tokens < -3
        done = asyncio.Event()

        async def interim() -> None:
            budget.charge()
            done.set()

        started = time.monotonic()
        budget.offer("a", interim)
        await asyncio.wait_for(done.wait(), timeout=5)
        assert time.monotonic() - started >= 0.2  # (1 - (-4)) / 20 s at the earliest

    run(go())


def test_budgets_are_per_workspace() -> None:
    budgets = EditBudgets(per_minute=30, burst=2)
    assert budgets.of("T1") is budgets.of("T1")
    assert budgets.of("T1") is not budgets.of("T2")
    assert budgets.of("T2").per_second == pytest.approx(0.5)
    with pytest.raises(ValueError, match="per_minute"):
        EditBudget(per_minute=0)


async def _stream_many(
    api: SlackApi, budget: EditBudget | None, streams: int, deltas: int
) -> tuple[list[str], float]:
    texts = [" ".join(f"**s{s}** word{i}" for i in range(deltas)) for s in range(streams)]

    async def one(index: int) -> list[str]:
        sink = SlackReplySink(
            api=api,
            channel=DEFAULT_CHANNEL_ID,
            user="U1",
            thread_ts="1700000000.000100",
            min_edit_interval_s=0.0,  # the worst case: no per-stream throttle at all
            edit_budget=budget,
        )
        for word in texts[index].split(" "):
            await sink.delta(word + " ")
            await asyncio.sleep(0.02)
        await sink.done(texts[index], reply_id=index + 1)
        return list(sink.posted)

    started = time.monotonic()
    posted = await asyncio.gather(*(one(i) for i in range(streams)))
    return [ts for parts in posted for ts in parts], time.monotonic() - started


def test_concurrent_streams_stay_within_the_workspace_budget() -> None:
    per_minute, burst, streams, deltas = 600.0, 3.0, 8, 30

    async def go() -> None:
        async with FakeSlackAPI() as fake:
            api = SlackApi(token=fake.bot_token, base_url=fake.url)
            budget = EditBudget(per_minute=per_minute, burst=burst)
            posted, elapsed = await _stream_many(api, budget, streams, deltas)
            updates = len(fake.calls("chat.update"))
            assert len(posted) == streams
            # interim edits within the bucket, plus one final edit per reply
            assert updates <= burst + per_minute / 60 * elapsed + streams + 1, (updates, elapsed)
            assert updates == budget.spent
            assert updates > streams  # interim edits did go out while streaming
            for index, ts in enumerate(posted):
                message = next(m for m in fake.messages(DEFAULT_CHANNEL_ID) if m["ts"] == ts)
                text = " ".join(f"**s{index}** word{i}" for i in range(deltas))
                assert message["text"] == to_mrkdwn(text)
                assert message["blocks"][0]["block_id"].startswith(f"{REPLY_BLOCK}:{index + 1}:")
                assert message["blocks"][-1]["type"] == "actions"

            # the same streams without the shared budget: far more edits than it allows
            fake.reset()
            _, elapsed = await _stream_many(api, None, streams, deltas)
            unbudgeted = len(fake.calls("chat.update"))
            assert unbudgeted > burst + per_minute / 60 * elapsed + streams + 1

    run(go())
