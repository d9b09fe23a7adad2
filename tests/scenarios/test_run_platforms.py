"""`chatloop run` as a whole: Slack and Discord side by side on one engine.

The composition root (chatloop.app.run_platforms) is started with settings that
point at the local Slack Web API fake and the local Discord gateway/REST fake, a
tiny in-process model and a migrated SQLite file. A signed Slack mention and a
Discord mention are both answered by the same engine (same replica, real tiny
model), and an adapter awaiting approval is announced in the Slack maintainers'
channel with Approve / Reject buttons. Cancelling the task shuts everything down.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import aiohttp
from sqlalchemy import select

from chatloop.app import run_platforms
from chatloop.settings import Settings
from storage.db import make_engine, session_factory, transaction, upgrade
from storage.models import AdapterStatus, Conversation, Reply
from storage.repositories import Adapters
from tests.conftest import run
from tests.fakes.discord_fake import (
    DEFAULT_BOT_USER_ID,
    DEFAULT_CHANNEL_ID,
    FakeDiscord,
    guild_payload,
    message_create,
)
from tests.fakes.slack_api import (
    FakeSlackAPI,
    app_mention_event,
    event_callback,
    signed_request,
)

SECRET = "scenario-signing-secret"
MAINTAINERS = "C0MAINTAIN"
WAIT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _eventually(check, what: str):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + WAIT
    while not (result := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"waited {WAIT:g} s for {what}")
        await asyncio.sleep(0.05)
    return result


def test_run_serves_slack_and_discord_on_one_engine(tmp_path: Path, tiny_model_dir: Path) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    model_id = str(tiny_model_dir.resolve())
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with transaction(sessions) as s:
        Adapters(s).register(version="cand-1", base_model="tiny")
        Adapters(s).transition("cand-1", AdapterStatus.CANDIDATE, actor="learning")
        Adapters(s).set_metrics("cand-1", {"win_rate": 0.7})
        Adapters(s).transition("cand-1", AdapterStatus.PENDING, actor="learning")

    async def go() -> None:
        with FakeSlackAPI() as slack:
            async with FakeDiscord(guilds=[guild_payload()]) as discord_fake:
                with discord_fake.patch_discord():
                    port = _free_port()
                    settings = Settings(
                        database_url=url,
                        model=str(tiny_model_dir),
                        model_cache_dir=tmp_path / "cache",
                        device="cpu",
                        dtype="float32",
                        max_new_tokens=6,
                        max_context_tokens=512,
                        slack_bot_token=slack.bot_token,  # type: ignore[arg-type]
                        slack_signing_secret=SECRET,  # type: ignore[arg-type]
                        slack_api_url=slack.url,
                        slack_maintainers_channel=MAINTAINERS,
                        http_port=port,
                        discord_token=discord_fake.token,  # type: ignore[arg-type]
                        replica_id="replica-A",
                    )
                    task = asyncio.create_task(run_platforms(settings))
                    try:
                        await discord_fake.wait_connected(timeout=WAIT)
                        async with aiohttp.ClientSession() as http:

                            async def slack_up() -> bool:
                                try:
                                    async with http.get(
                                        f"http://127.0.0.1:{port}/slack/events"
                                    ) as r:
                                        return r.status in (200, 400, 401, 405)
                                except aiohttp.ClientError:
                                    return False

                            for _ in range(int(WAIT / 0.1)):
                                if await slack_up():
                                    break
                                await asyncio.sleep(0.1)
                            body, headers = signed_request(
                                SECRET,
                                event_callback(app_mention_event("How do I reset my password?")),
                            )
                            async with http.post(
                                f"http://127.0.0.1:{port}/slack/events",
                                data=body.encode(),
                                headers=headers,
                            ) as resp:
                                assert resp.status == 200
                        await discord_fake.dispatch(
                            "MESSAGE_CREATE",
                            message_create(
                                f"<@{DEFAULT_BOT_USER_ID}> how do I log in?",
                                channel_id=DEFAULT_CHANNEL_ID,
                            ),
                        )

                        def replies() -> list[Reply]:
                            with sessions() as s:
                                rows = list(s.scalars(select(Reply)))
                                return rows if len(rows) >= 2 else []

                        rows = await _eventually(replies, "a reply on each platform")
                        with sessions() as s:
                            platforms = {
                                c.platform
                                for c in s.scalars(select(Conversation))
                                if c.id in {r.conversation_id for r in rows}
                            }
                        assert platforms == {"slack", "discord"}
                        assert {r.replica_id for r in rows} == {"replica-A"}
                        assert {r.model_id for r in rows} == {model_id}
                        assert all(
                            r.adapter_version == "base" and r.completion_tokens > 0 for r in rows
                        )
                        assert await _eventually(
                            lambda: [m for m in slack.messages(MAINTAINERS) if "cand-1" in str(m)],
                            "the approval request in Slack",
                        )
                    finally:
                        task.cancel()
                        await asyncio.gather(task, return_exceptions=True)

    run(go())
    engine.dispose()
