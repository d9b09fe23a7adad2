"""Replies through Slack's streaming API for AI apps (bot.platforms.slack.stream).

Real :class:`SlackApi` calls (slack_sdk's ``chat_startStream`` / ``chat_appendStream`` /
``chat_stopStream``) against the local Web API fake, taught those three methods here
the way Slack documents them: ``startStream`` posts a message in the thread and
returns its ``ts``, ``appendStream`` adds Markdown, ``stopStream`` adds the rest and
the blocks shown under it. Workspaces without the feature are the fake refusing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bot.platforms.slack.api import SlackApi
from bot.platforms.slack.blocks import reply_id_in
from bot.platforms.slack.sink import SlackReplySink
from bot.platforms.slack.stream import MAX_STREAM_CHARS, SlackStreamSink, defuse
from tests.conftest import run
from tests.fakes.slack_api import DEFAULT_CHANNEL_ID, FakeSlackAPI

THREAD = "1700000000.000100"


class StreamingSlack(FakeSlackAPI):
    """The shared fake plus ``chat.startStream`` / ``appendStream`` / ``stopStream``."""

    def __init__(self) -> None:
        super().__init__()
        self._handlers["chat.startStream"] = self._m_start
        self._handlers["chat.appendStream"] = self._m_append
        self._handlers["chat.stopStream"] = self._m_stop

    def _m_start(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        self._require(args, "channel", "thread_ts")
        if not args["channel"].startswith("D") and not args.get("recipient_user_id"):
            return self._m_fail("missing_recipient_user_id")
        message = self._bot_message({"text": args.get("markdown_text") or " ", **args})
        message["streaming"] = True
        self._channel(args["channel"]).messages.append(message)
        return {"channel": args["channel"], "ts": message["ts"]}

    def _stream(self, args: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "channel", "ts")
        message = self._find_message(args["channel"], args["ts"])
        assert message is not None and message.get("streaming"), "not a live stream"
        return message

    def _m_append(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        message = self._stream(args)
        message["text"] += args.get("markdown_text", "")
        return {"channel": args["channel"], "ts": args["ts"]}

    def _m_stop(self, args: dict[str, Any], user_id: str) -> dict[str, Any]:
        message = self._stream(args)
        message["text"] += args.get("markdown_text", "")
        if args.get("blocks"):
            message["blocks"] = args["blocks"]
        message["streaming"] = False
        return {"channel": args["channel"], "ts": args["ts"]}

    @staticmethod
    def _m_fail(error: str) -> dict[str, Any]:
        from tests.fakes.slack_api import _SlackError

        raise _SlackError(error)


def _sinks(api: SlackApi) -> SlackStreamSink:
    fallback = SlackReplySink(
        api=api, channel=DEFAULT_CHANNEL_ID, user="U1", thread_ts=THREAD, min_edit_interval_s=0
    )
    return SlackStreamSink(
        api=api,
        fallback=fallback,
        channel=DEFAULT_CHANNEL_ID,
        thread_ts=THREAD,
        user="U1",
        team_id="T1",
        min_append_interval_s=0.05,
    )


async def _stream(sink: SlackStreamSink, words: list[str], reply_id: int = 7) -> Any:
    for word in words:
        await sink.delta(word)
        await asyncio.sleep(0.01)
    return await sink.done("".join(words), reply_id=reply_id, note="📚 from the memory: #3")


WORDS = ["**Step one**", ": run ", "`make`", ", then ", "see <!channel> ", *["more "] * 20]


def test_a_reply_streams_into_one_message_with_its_buttons() -> None:
    async def go() -> None:
        async with StreamingSlack() as fake:
            api = SlackApi(token=fake.bot_token, base_url=fake.url)
            sink = _sinks(api)
            assert await _stream(sink, WORDS) == sink.ts
            ts = sink.ts
            start = fake.calls("chat.startStream")
            assert len(start) == 1 and start[0].args["markdown_text"] == "**Step one**"
            assert start[0].args["recipient_user_id"] == "U1"
            assert start[0].args["recipient_team_id"] == "T1"
            assert 1 <= len(fake.calls("chat.appendStream")) < len(WORDS)  # spaced, not per word
            assert len(fake.calls("chat.stopStream")) == 1
            assert not fake.calls("chat.postMessage") and not fake.calls("chat.update")
            (message,) = fake.messages(DEFAULT_CHANNEL_ID)
            assert message["ts"] == ts and sink.posted == [ts]
            assert message["text"] == defuse("".join(WORDS))
            assert "<!channel>" not in message["text"]  # nothing pings
            assert reply_id_in(message["blocks"]) == 7  # "Flag and correct" finds the reply
            assert message["blocks"][-1]["type"] == "actions"
            assert "memory" in str(message["blocks"])

    run(go())


def test_a_workspace_without_streaming_gets_the_ordinary_reply() -> None:
    async def go() -> None:
        async with StreamingSlack() as fake:
            api = SlackApi(token=fake.bot_token, base_url=fake.url)
            fake.fail_next("chat.startStream", status=200, error="not_allowed")
            sink = _sinks(api)
            await _stream(sink, WORDS)
            assert sink.fell_back and not fake.calls("chat.appendStream")
            (message,) = fake.messages(DEFAULT_CHANNEL_ID)
            assert sink.posted == [message["ts"]]
            assert message["text"].startswith("*Step one*: run `make`")  # mrkdwn
            assert message["blocks"][-1]["type"] == "actions"

    run(go())


def test_a_refused_append_deletes_the_stream_and_posts_the_whole_text() -> None:
    async def go() -> None:
        async with StreamingSlack() as fake:
            api = SlackApi(token=fake.bot_token, base_url=fake.url)
            fake.fail_next("chat.appendStream", status=200, error="message_not_in_streaming_state")
            sink = _sinks(api)
            await _stream(sink, WORDS)
            assert sink.fell_back
            assert len(fake.calls("chat.delete")) == 1
            (message,) = fake.messages(DEFAULT_CHANNEL_ID)
            assert not message.get("streaming")
            assert message["text"].endswith("more")
            assert message["text"].count("more") == 20  # the whole text, once

    run(go())


def test_a_rate_limited_append_keeps_its_text_for_the_next_one() -> None:
    async def go() -> None:
        async with StreamingSlack() as fake:
            api = SlackApi(token=fake.bot_token, base_url=fake.url)
            fake.fail_next("chat.appendStream", status=429, retry_after=0)
            sink = _sinks(api)
            await _stream(sink, WORDS)
            assert not sink.fell_back
            (message,) = fake.messages(DEFAULT_CHANNEL_ID)
            assert message["text"] == defuse("".join(WORDS))

    run(go())


def test_a_reply_longer_than_one_stream_falls_back_to_parts() -> None:
    async def go() -> None:
        async with StreamingSlack() as fake:
            api = SlackApi(token=fake.bot_token, base_url=fake.url)
            sink = _sinks(api)
            chunk = "word " * 400
            words = [chunk] * (MAX_STREAM_CHARS // len(chunk) + 2)
            await _stream(sink, words)
            assert sink.fell_back and len(sink.posted) > 1
            messages = fake.messages(DEFAULT_CHANNEL_ID)
            assert [m["ts"] for m in messages] == sink.posted
            assert sum(m["text"].count("word") for m in messages) == 400 * len(words)

    run(go())
