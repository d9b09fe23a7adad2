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
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
from sqlalchemy import Engine, select

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


def test_chatloop_run_on_a_new_sqlite_file_answers_slack_with_no_other_step(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The operator's first start: `chatloop run`, Slack's own variable names, a new database.

    No `chatloop db upgrade` first: the command creates the schema (and says so in its
    log), serves the Slack Events API, and a signed mention gets an answer posted
    through the Web API (the local fake) and stored in the new file.
    """
    db = tmp_path / "fresh" / "new.db"
    port = _free_port()
    with FakeSlackAPI() as slack:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOOP_")}
        env.update(
            {
                "CHATLOOP_DATABASE_URL": f"sqlite:///{db}",
                "CHATLOOP_MODEL": str(tiny_model_dir),
                "CHATLOOP_MODEL_CACHE_DIR": str(tmp_path / "cache"),
                "CHATLOOP_ADAPTER_DIR": str(tmp_path / "adapters"),
                "CHATLOOP_DEVICE": "cpu",
                "CHATLOOP_DTYPE": "float32",
                "CHATLOOP_MAX_NEW_TOKENS": "6",
                "CHATLOOP_MEMORY_EMBEDDING_MODEL": "hashing",
                "CHATLOOP_SLACK_API_URL": slack.url,
                "CHATLOOP_HTTP_PORT": str(port),
                "SLACK_BOT_TOKEN": slack.bot_token,
                "SLACK_SIGNING_SECRET": SECRET,
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatloop.cli", "run"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            body, headers = signed_request(
                SECRET, event_callback(app_mention_event("How do I reset my password?"))
            )
            deadline = time.monotonic() + 3 * WAIT
            while True:  # the first start loads the model; retry until the port answers
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                try:
                    request = urllib.request.Request(
                        f"http://127.0.0.1:{port}/slack/events",
                        data=body.encode(),
                        headers=headers,
                    )
                    with urllib.request.urlopen(request, timeout=5) as resp:
                        assert resp.status == 200
                    break
                except (urllib.error.URLError, ConnectionError):
                    assert time.monotonic() < deadline, "chatloop run never served HTTP"
                    time.sleep(0.2)
            assert slack.wait_for("chat.postMessage", timeout=WAIT)
            engine = make_engine(f"sqlite:///{db}")
            try:
                deadline = time.monotonic() + WAIT
                while not (replies := _replies(engine)):
                    assert time.monotonic() < deadline, "no reply was stored"
                    time.sleep(0.1)
            finally:
                engine.dispose()
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err[-3000:]
    assert "creating the schema" in err and "empty -> " in err
    assert SECRET not in err and slack.bot_token not in err
    assert len(replies) == 1 and replies[0].completion_tokens > 0
    core_lines = [line for line in err.splitlines() if " bot.core.handler: " in line]
    assert core_lines, err[-3000:]
    for line in core_lines:  # UTC millisecond times; the event's id on each of its lines
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", line), line
        assert re.search(r" event=[0-9a-f]{12}\b", line), line


def _replies(engine: Engine) -> list[Reply]:
    with session_factory(engine)() as s:
        return list(s.scalars(select(Reply)))
