"""Self-tests: the fakes work with the real slack_sdk / slack_bolt / discord.py clients.

Plain ``asyncio.run`` inside sync tests (no pytest plugin). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from slack_bolt import App, BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_bolt.request import BoltRequest
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes import discord_fake as dfake
from tests.fakes import slack_api as sfake
from tests.fakes.discord_fake import FakeDiscord, Intents, import_discord
from tests.fakes.slack_api import FakeSlackAPI

import_discord()  # discord.py's audioop import warns on 3.11: import it once, quietly
import discord  # noqa: E402
from discord import app_commands  # noqa: E402

SECRET = "fake-signing-secret"
TIMEOUT = 5.0


def run(coro: Awaitable[Any]) -> Any:
    """Run a coroutine with an overall bound, so a broken fake fails instead of hanging."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 25)

    return asyncio.run(bounded())


# ======================================================================================
# Slack
# ======================================================================================


def test_slack_web_client_posts_updates_threads_reacts_and_deletes() -> None:
    with FakeSlackAPI() as api:
        client = WebClient(token=api.bot_token, base_url=api.url)
        auth = client.auth_test()
        assert auth["user_id"] == api.bot_user_id and auth["bot_id"] == api.bot_id

        posted = client.chat_postMessage(
            channel="C1",
            text="thinking...",
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "thinking..."}}],
        )
        assert posted["channel"] == "C1" and posted["message"]["text"] == "thinking..."
        client.chat_update(channel="C1", ts=posted["ts"], text="the answer")
        reply = client.chat_postMessage(channel="C1", text="in thread", thread_ts=posted["ts"])
        client.reactions_add(channel="C1", timestamp=posted["ts"], name="white_check_mark")

        msgs = api.messages("C1")
        assert [m["text"] for m in msgs] == ["the answer", "in thread"]
        assert msgs[0]["edited"]["user"] == api.bot_user_id
        assert msgs[0]["blocks"][0]["type"] == "section"  # chat.update without blocks keeps them
        assert msgs[1]["thread_ts"] == posted["ts"]
        assert msgs[0]["reactions"] == [
            {"name": "white_check_mark", "users": [api.bot_user_id], "count": 1}
        ]

        thread = client.conversations_replies(channel="C1", ts=posted["ts"])
        assert [m["ts"] for m in thread["messages"]] == [posted["ts"], reply["ts"]]
        assert thread["messages"][0]["reply_count"] == 1

        with pytest.raises(SlackApiError) as exc:
            client.reactions_add(channel="C1", timestamp=posted["ts"], name="white_check_mark")
        assert exc.value.response["error"] == "already_reacted"

        client.chat_delete(channel="C1", ts=reply["ts"])
        assert [m["text"] for m in api.messages("C1")] == ["the answer"]

        call = api.calls("chat.update")[0]
        assert call.args["ts"] == posted["ts"] and call.token == api.bot_token
        assert call.content_type == "application/json"  # slack_sdk sends chat.* as JSON
        assert api.calls("reactions.add")[0].content_type == "application/x-www-form-urlencoded"
        assert api.calls("reactions.add", ok=False)[0].response["error"] == "already_reacted"


def test_slack_other_methods_and_errors() -> None:
    with FakeSlackAPI(users={"U0000BOB1": {"name": "bob", "tz": "UTC"}}) as api:
        client = WebClient(token=api.bot_token, base_url=api.url)
        assert client.users_info(user=sfake.DEFAULT_USER_ID)["user"]["name"] == "alice"
        bob = client.users_info(user="U0000BOB1")["user"]
        assert bob["name"] == "bob" and bob["tz"] == "UTC"
        with pytest.raises(SlackApiError, match="user_not_found"):
            client.users_info(user="U_NOBODY")
        assert client.conversations_info(channel="D123")["channel"]["is_im"] is True
        ephemeral = client.chat_postEphemeral(channel="C1", user="U1", text="only you")
        assert ephemeral["message_ts"]
        assert api.ephemeral_messages("C1")[0]["recipient"] == "U1"
        assert api.messages("C1") == []

        view = {
            "type": "modal",
            "callback_id": "feedback",
            "title": {"type": "plain_text", "text": "Feedback"},
            "blocks": [],
        }
        opened = client.views_open(trigger_id="1.2.3", view=view)["view"]
        updated = client.views_update(
            view_id=opened["id"], view={**view, "blocks": [{"type": "divider"}]}
        )["view"]
        assert updated["id"] == opened["id"] and api.views()[0]["blocks"] == [{"type": "divider"}]
        with pytest.raises(SlackApiError, match="not_found"):
            client.views_update(view_id="V_NOPE", view=view)

        with pytest.raises(SlackApiError, match="not_allowed_token_type"):
            client.apps_connections_open(app_token=api.bot_token)
        with pytest.raises(SlackApiError, match="message_not_found"):
            client.chat_update(channel="C1", ts="1.000001", text="x")
        with pytest.raises(SlackApiError, match="no_text"):
            # (chat_postMessage() itself warns without text=; under -W error that raises)
            client.api_call("chat.postMessage", json={"channel": "C1"})

        client.api_call("bookmarks.list", params={"channel_id": "C1"})  # unknown: ok + recorded
        assert api.calls("bookmarks.list")[0].args == {"channel_id": "C1"}

        with pytest.raises(SlackApiError) as bad:
            WebClient(token="xoxb-wrong", base_url=api.url).auth_test()
        assert bad.value.response["error"] == "invalid_auth"
        with pytest.raises(SlackApiError) as missing:
            WebClient(base_url=api.url).api_call("auth.test")
        assert missing.value.response["error"] == "not_authed"


def test_slack_injected_failures() -> None:
    with FakeSlackAPI() as api:
        client = WebClient(token=api.bot_token, base_url=api.url)
        api.fail_next("chat.postMessage", status=500)
        with pytest.raises(SlackApiError) as server:
            client.chat_postMessage(channel="C1", text="x")
        assert server.value.response.status_code == 500

        api.fail_next("chat.postMessage", status=200, error="ratelimited")
        with pytest.raises(SlackApiError) as limited:
            client.chat_postMessage(channel="C1", text="x")
        assert limited.value.response.status_code == 200
        assert limited.value.response["error"] == "ratelimited"

        api.fail_next("*", status=429, retry_after=7)  # no retry handler: surfaces as error
        with pytest.raises(SlackApiError) as raw:
            client.users_info(user=sfake.DEFAULT_USER_ID)
        assert raw.value.response.status_code == 429
        assert raw.value.response.headers["Retry-After"] in ("7", ["7"])

        client.chat_postMessage(channel="C1", text="finally")
        assert [m["text"] for m in api.messages("C1")] == ["finally"]


def test_slack_sync_client_retries_429_with_retry_after() -> None:
    with FakeSlackAPI() as api:
        client = WebClient(
            token=api.bot_token,
            base_url=api.url,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
        )
        api.fail_next("chat.postMessage", status=429, retry_after=0)
        client.chat_postMessage(channel="C1", text="eventually")
        assert [c.status for c in api.calls("chat.postMessage")] == [429, 200]
        assert [m["text"] for m in api.messages("C1")] == ["eventually"]


def test_slack_async_client_posts_updates_and_retries() -> None:
    async def scenario(api: FakeSlackAPI) -> None:
        client = AsyncWebClient(
            token=api.bot_token,
            base_url=api.url,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
        )
        posted = await client.chat_postMessage(channel="D1", text="one")
        await client.chat_update(channel="D1", ts=posted["ts"], text="two")
        api.fail_next("chat.postMessage", status=429, retry_after=0)
        await client.chat_postMessage(channel="D1", text="three")
        calls = await api.async_wait_for("chat.postMessage", 2, TIMEOUT, ok=True)
        assert [c.args["text"] for c in calls] == ["one", "three"]
        assert [m["text"] for m in api.messages("D1")] == ["two", "three"]

    with FakeSlackAPI() as api:
        run(scenario(api))


def test_slack_socket_mode_hello_envelopes_and_acks() -> None:
    from slack_sdk.socket_mode.aiohttp import SocketModeClient
    from slack_sdk.socket_mode.request import SocketModeRequest
    from slack_sdk.socket_mode.response import SocketModeResponse

    async def scenario(api: FakeSlackAPI) -> None:
        web = AsyncWebClient(token=api.bot_token, base_url=api.url)
        with pytest.raises(SlackApiError, match="not_allowed_token_type"):
            await web.apps_connections_open(app_token=api.bot_token)
        with pytest.raises(SlackApiError, match="not_allowed_token_type"):
            await AsyncWebClient(token=api.app_token, base_url=api.url).auth_test()
        url = (await web.apps_connections_open(app_token=api.app_token))["url"]
        assert url.startswith("ws://") and "ticket=" in url

        seen: list[dict[str, Any]] = []
        requests: list[SocketModeRequest] = []

        async def on_message(client: Any, message: dict[str, Any], raw: str | None) -> None:
            seen.append(message)

        async def on_request(client: Any, request: SocketModeRequest) -> None:
            requests.append(request)
            await client.send_socket_mode_response(
                SocketModeResponse(envelope_id=request.envelope_id, payload={"ok": 1})
            )

        client = SocketModeClient(app_token=api.app_token, web_client=web, ping_interval=30)
        client.message_listeners.append(on_message)
        client.socket_mode_request_listeners.append(on_request)
        try:
            await client.connect()
            await api.async_wait_socket_connected()
            envelope = sfake.socket_mode_envelope(
                sfake.event_callback(sfake.app_mention_event("over the socket"))
            )
            assert envelope["accepts_response_payload"] is False
            sent = await api.async_send_envelope(envelope)
            ack = await api.async_wait_for_ack(sent, TIMEOUT)
            assert ack == {"envelope_id": sent, "payload": {"ok": 1}}
            assert seen[0]["type"] == "hello" and seen[0]["connection_info"]["app_id"]
            (request,) = requests
            assert request.type == "events_api"
            assert request.payload["event"]["text"].endswith("over the socket")
        finally:
            await client.close()
        # each URL is good for one connection
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(client.wss_uri or "")
        assert api.socket_connections_opened == 1

    with FakeSlackAPI() as api:
        run(scenario(api))


def test_slack_wait_for_is_bounded() -> None:
    with FakeSlackAPI() as api:
        with pytest.raises(TimeoutError, match=r"chat\.postMessage"):
            api.wait_for("chat.postMessage", timeout=0.05)
        with pytest.raises(TimeoutError):
            run(api.async_wait_for("chat.postMessage", timeout=0.05))


def test_signature_helper_matches_slack_sdk_verifier() -> None:
    body = sfake.slash_command_body("/ask", "what is up?")
    headers = sfake.sign_slack_request(SECRET, body.encode())
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, headers)
    assert verifier.is_valid_request(body.encode(), headers)
    assert not verifier.is_valid_request(body + "x", headers)
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)
    stale = sfake.sign_slack_request(SECRET, body, timestamp=int(time.time()) - 600)
    assert not verifier.is_valid_request(body, stale)
    # A fixed timestamp gives Slack's documented v0 form.
    fixed = sfake.sign_slack_request(SECRET, b"x=1", timestamp=1_531_420_618)
    assert fixed["X-Slack-Request-Timestamp"] == "1531420618"
    assert fixed["X-Slack-Signature"].startswith("v0=") and len(fixed["X-Slack-Signature"]) == 67
    assert (
        verifier.generate_signature(timestamp="1531420618", body="x=1")
        == fixed["X-Slack-Signature"]
    )


def test_payload_builders_have_the_shapes_bolt_routes_on() -> None:
    payload = sfake.parse_form_payload(sfake.block_actions_payload("rate_good", value="42"))
    assert payload["type"] == "block_actions" and payload["actions"][0]["value"] == "42"
    assert payload["container"]["type"] == "message" and payload["channel"]["id"]
    shortcut = sfake.parse_form_payload(sfake.message_shortcut_payload("remember", text="hey"))
    assert shortcut["type"] == "message_action" and shortcut["message"]["text"] == "hey"
    view = sfake.parse_form_payload(
        sfake.view_submission_payload(
            "feedback", {"b": {"a": {"type": "plain_text_input", "value": "great"}}}
        )
    )
    assert view["view"]["state"]["values"]["b"]["a"]["value"] == "great"
    command = dict(parse_qsl(sfake.slash_command_body("ask", "hi")))
    assert command["command"] == "/ask" and command["text"] == "hi"
    mention = sfake.app_mention_event("hello")
    assert mention["text"] == f"<@{sfake.DEFAULT_BOT_USER_ID}> hello"
    envelope = sfake.event_callback(mention, event_id="Ev1")
    assert envelope["event_id"] == "Ev1" and envelope["authorizations"][0]["is_bot"] is True
    assert sfake.message_event("hi")["channel_type"] == "im"


def _signed(
    payload: dict[str, Any] | str, secret: str = SECRET
) -> tuple[str, dict[str, str | Sequence[str]]]:
    """A body and signed headers, typed the way BoltRequest wants its headers."""
    body, headers = sfake.signed_request(secret, payload)
    return body, dict(headers)


def _bolt_app(api: FakeSlackAPI, seen: dict[str, Any]) -> App:
    app = App(
        signing_secret=SECRET,
        process_before_response=True,
        client=WebClient(token=api.bot_token, base_url=api.url),
    )

    @app.event("app_mention")
    def on_mention(event: dict[str, Any], say: Callable[..., Any]) -> None:
        say(text=f"you said: {event['text']}", thread_ts=event["ts"])

    @app.event("message")
    def on_dm(event: dict[str, Any], say: Callable[..., Any]) -> None:
        say(text=f"dm: {event['text']}")

    @app.event("reaction_added")
    def on_reaction(event: dict[str, Any]) -> None:
        seen["reaction"] = event["reaction"]

    @app.action("rate_good")
    def on_action(
        ack: Callable[..., Any], body: dict[str, Any], respond: Callable[..., Any]
    ) -> None:
        ack()
        respond(text=f"rated {body['actions'][0]['value']}")

    @app.shortcut("remember")
    def on_shortcut(ack: Callable[..., Any], shortcut: dict[str, Any]) -> None:
        ack()
        seen["shortcut"] = shortcut["message"]["text"]

    @app.view("feedback")
    def on_view(ack: Callable[..., Any], view: dict[str, Any]) -> None:
        ack()
        seen["view"] = view["state"]["values"]["b"]["a"]["value"]

    @app.command("/ask")
    def on_command(ack: Callable[..., Any], command: dict[str, Any]) -> None:
        ack(text=f"asking: {command['text']}")

    return app


def test_real_bolt_app_against_fake_with_signed_payloads() -> None:
    with FakeSlackAPI() as api:
        seen: dict[str, Any] = {}
        app = _bolt_app(api, seen)
        assert api.calls("auth.test")  # Bolt verified the token against the fake

        def send(payload: dict[str, Any] | str) -> BoltResponse:
            body, headers = _signed(payload)
            return app.dispatch(BoltRequest(body=body, headers=headers))

        mention = sfake.app_mention_event("hello", channel="C9")
        assert send(sfake.event_callback(mention)).status == 200
        posted = api.wait_for("chat.postMessage", 1, TIMEOUT)[0]
        assert posted.args["channel"] == "C9" and posted.args["thread_ts"] == mention["ts"]
        assert api.messages("C9")[0]["text"].startswith("you said: <@")

        assert send(sfake.event_callback(sfake.message_event("hi there"))).status == 200
        api.wait_for("chat.postMessage", 2, TIMEOUT)
        assert api.messages(sfake.DEFAULT_DM_CHANNEL_ID)[0]["text"] == "dm: hi there"

        item = api.messages("C9")[0]["ts"]
        reaction = sfake.reaction_added_event("+1", item_ts=item)
        assert send(sfake.event_callback(reaction)).status == 200
        assert seen["reaction"] == "+1"

        action = sfake.block_actions_payload(
            "rate_good",
            value="5",
            message=api.messages("C9")[0],
            channel="C9",
            response_url=api.response_url("r1"),
        )
        assert send(action).status == 200
        responded = api.wait_for("response_url", 1, TIMEOUT)[0]
        assert responded.args["text"] == "rated 5" and responded.args["_path"] == "r1"

        assert send(sfake.message_shortcut_payload("remember", text="note this")).status == 200
        assert seen["shortcut"] == "note this"
        values = {"b": {"a": {"type": "plain_text_input", "value": "great"}}}
        assert send(sfake.view_submission_payload("feedback", values)).status == 200
        assert seen["view"] == "great"

        answer = send(sfake.slash_command_body("/ask", "why?"))
        assert answer.status == 200 and answer.body == "asking: why?"

        body, headers = _signed(sfake.slash_command_body("/ask"), secret="wrong-secret")
        assert app.dispatch(BoltRequest(body=body, headers=headers)).status == 401


def test_real_async_bolt_app_against_fake() -> None:
    async def scenario(api: FakeSlackAPI) -> None:
        app = AsyncApp(
            signing_secret=SECRET,
            process_before_response=True,
            client=AsyncWebClient(token=api.bot_token, base_url=api.url),
        )

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any], say: Callable[..., Any]) -> None:
            await say(text="async hello", thread_ts=event["ts"])

        body, headers = _signed(sfake.event_callback(sfake.app_mention_event("hi")))
        response = await app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
        assert response.status == 200
        await api.async_wait_for("chat.postMessage", 1, TIMEOUT)
        assert api.messages(sfake.DEFAULT_CHANNEL_ID)[0]["text"] == "async hello"

    with FakeSlackAPI() as api:
        run(scenario(api))


# ======================================================================================
# Discord
# ======================================================================================


def _intents(*, message_content: bool = True) -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = message_content
    return intents


def _client(*, message_content: bool = True) -> discord.Client:
    # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE before
    # on_ready (default 2 s).
    return discord.Client(
        intents=_intents(message_content=message_content), guild_ready_timeout=0.05
    )


async def _until(check: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


SEND = ("POST", "/channels/{channel_id}/messages")


def test_discord_client_connects_receives_and_replies() -> None:
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            with fake.patch_discord():
                client = _client()
                received: list[discord.Message] = []
                ready: list[bool] = []

                @client.event
                async def on_ready() -> None:
                    ready.append(True)

                @client.event
                async def on_message(message: discord.Message) -> None:
                    received.append(message)
                    if message.author != client.user:
                        await message.channel.send(f"echo: {message.content}")

                async with fake.running_client(client):
                    assert ready == [True]
                    assert client.user is not None and str(client.user.id) == fake.bot_user["id"]
                    guild = client.get_guild(int(dfake.DEFAULT_GUILD_ID))
                    assert guild is not None and guild.name == "Fake Guild"
                    assert fake.connection_params[0]["compress"] == "zlib-stream"

                    await fake.dispatch("MESSAGE_CREATE", dfake.message_create("hello bot"))
                    sent = await fake.wait_for_request(*SEND, status=200)
                    assert sent[0].json["content"] == "echo: hello bot"
                    assert sent[0].headers["Authorization"] == f"Bot {fake.token}"
                    # Discord echoes the bot's own message back through the gateway.
                    await _until(lambda: len(received) == 2, "echo of own message")
                    assert received[0].content == "hello bot"
                    assert received[0].author.id == int(dfake.DEFAULT_USER_ID)
                    assert received[1].author == client.user
                    stored = fake.messages(dfake.DEFAULT_CHANNEL_ID)
                    assert [m["content"] for m in stored] == ["hello bot", "echo: hello bot"]

                    msg = received[1]
                    await msg.edit(content="edited")
                    await msg.add_reaction("👍")
                    await received[0].reply("a reply")
                    async with msg.channel.typing():
                        pass
                    stored = fake.messages(dfake.DEFAULT_CHANNEL_ID)
                    assert stored[1]["content"] == "edited" and stored[1]["edited_timestamp"]
                    assert stored[1]["reactions"][0]["emoji"]["name"] == "👍"
                    assert stored[2]["message_reference"]["message_id"] == str(received[0].id)
                    assert fake.requests("POST", "/channels/{channel_id}/typing")
                    await msg.delete()
                    assert len(fake.messages(dfake.DEFAULT_CHANNEL_ID)) == 2

                    # direct messages, both ways
                    await fake.dispatch("MESSAGE_CREATE", dfake.dm_message_create("psst"))
                    await _until(
                        lambda: any(m.content == "echo: psst" for m in received), "DM echo"
                    )
                    assert isinstance(received[-2].channel, discord.DMChannel)
                    alice = await client.fetch_user(int(dfake.DEFAULT_USER_ID))
                    await alice.send("hi alice")
                    assert fake.requests("POST", "/users/@me/channels")
                    assert fake.bot_messages()[-1]["content"] == "hi alice"

                assert client.is_closed()
            assert len(fake.gateway_payloads(2)) == 1

    run(scenario())


def test_discord_resumes_after_drop_and_delivers_missed_events_once() -> None:
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            with fake.patch_discord():
                client = _client()
                contents: list[str] = []
                resumed: list[bool] = []

                @client.event
                async def on_message(message: discord.Message) -> None:
                    contents.append(message.content)

                @client.event
                async def on_resumed() -> None:
                    resumed.append(True)

                async with fake.running_client(client):
                    session = fake.session_id
                    await fake.drop_connection(hold_reconnect=True)
                    seq = await fake.dispatch("MESSAGE_CREATE", dfake.message_create("missed"))
                    assert seq is not None and not fake.connected
                    fake.release_reconnect()
                    resume = (await fake.wait_for_op(6))[0]["d"]
                    assert resume["session_id"] == session and resume["seq"] == seq - 1
                    await fake.wait_connected()
                    await _until(lambda: "missed" in contents and resumed, "replay + RESUMED")

                    # Abrupt TCP loss (no close frame) resumes too.
                    await fake.drop_connection(code=None)
                    await fake.wait_for_op(6, count=2)
                    await fake.wait_connected()
                    await fake.dispatch("MESSAGE_CREATE", dfake.message_create("after"))
                    await _until(lambda: "after" in contents, "live after second resume")

                    # Discord's op 7 RECONNECT: also a resume.
                    await fake.request_reconnect()
                    await fake.wait_for_op(6, count=3)
                    await fake.wait_connected()
                    await fake.dispatch("MESSAGE_CREATE", dfake.message_create("end"))
                    await _until(lambda: "end" in contents, "live after op 7")

                assert contents == ["missed", "after", "end"]  # each exactly once
                assert len(fake.gateway_payloads(2)) == 1  # one IDENTIFY, the rest RESUMEs
                assert fake.session_id == session and fake.connection_count == 4

    run(scenario())


class _NoIdentifyDelayClient(discord.Client):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every non-initial IDENTIFY; not needed here."""


def test_discord_invalid_session_makes_client_identify_again() -> None:
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            with fake.patch_discord():
                client = _NoIdentifyDelayClient(intents=_intents(), guild_ready_timeout=0.05)
                async with fake.running_client(client):
                    first = fake.session_id
                    await fake.invalidate_session(resumable=False)
                    await fake.wait_for_op(2, count=2)
                    await fake.wait_connected()
                    assert fake.session_id != first

    run(scenario())


def test_discord_rest_rate_limit_and_server_error_are_retried() -> None:
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            with fake.patch_discord():
                client = _client()
                async with fake.running_client(client):
                    channel = client.get_channel(int(dfake.DEFAULT_CHANNEL_ID))
                    assert isinstance(channel, discord.TextChannel)
                    fake.fail_next(*SEND, status=429, retry_after=0.05)
                    await channel.send("after 429")
                    fake.fail_next("POST", f"/channels/{channel.id}/messages", status=500)
                    await channel.send("after 500")  # discord.py sleeps 1 s, then retries
                    assert [r.status for r in fake.requests(*SEND)] == [429, 200, 500, 200]
                    limited = fake.requests(*SEND)[0]
                    assert limited.response == {
                        "message": "You are being rate limited.",
                        "retry_after": 0.05,
                        "global": False,
                        "code": 0,
                    }
                    fake.fail_next(*SEND, status=429, cloudflare=True)
                    with pytest.raises(discord.HTTPException) as banned:
                        await channel.send("blocked")
                    assert banned.value.status == 429
                    fake.fail_next(*SEND, status=403, code=50013, message="Missing Permissions")
                    with pytest.raises(discord.Forbidden) as forbidden:
                        await channel.send("nope")
                    assert forbidden.value.code == 50013
                    with pytest.raises(discord.HTTPException) as too_long:
                        await channel.send("x" * 2001)
                    assert too_long.value.code == 50035
                    contents = [m["content"] for m in fake.bot_messages()]
                    assert contents == ["after 429", "after 500"]

    run(scenario())


def test_discord_intents_are_enforced() -> None:
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            with fake.patch_discord():
                client = _client(message_content=False)
                seen: list[str] = []

                @client.event
                async def on_message(message: discord.Message) -> None:
                    seen.append(message.content)

                async with fake.running_client(client):
                    await fake.dispatch("MESSAGE_CREATE", dfake.message_create("secret"))
                    mention = f"<@{fake.bot_user['id']}> hi"
                    await fake.dispatch("MESSAGE_CREATE", dfake.message_create(mention))
                    await fake.dispatch("MESSAGE_CREATE", dfake.dm_message_create("dm text"))
                    await _until(lambda: len(seen) == 3, "three messages")
                    assert seen == ["", mention, "dm text"]
                    typing = {
                        "channel_id": dfake.DEFAULT_CHANNEL_ID,
                        "guild_id": dfake.DEFAULT_GUILD_ID,
                        "user_id": dfake.DEFAULT_USER_ID,
                        "timestamp": int(time.time()),
                    }
                    assert await fake.dispatch("TYPING_START", typing) is not None
                    assert (
                        await fake.dispatch(
                            "GUILD_MEMBER_ADD", {"guild_id": dfake.DEFAULT_GUILD_ID}
                        )
                        is None
                    )

        async with FakeDiscord(disallowed_intents=Intents.MESSAGE_CONTENT) as strict:
            with strict.patch_discord(), pytest.raises(discord.PrivilegedIntentsRequired):
                async with strict.running_client(_client()):
                    pass

    run(scenario())


def test_discord_bad_token_fails_login() -> None:
    async def scenario() -> None:
        async with FakeDiscord(token="the-real-one") as fake:
            with fake.patch_discord():
                client = _client()
                with pytest.raises(discord.LoginFailure):
                    async with client:
                        await client.login("a-wrong-one")
                assert fake.requests("GET", "/users/@me")[0].status == 401

    run(scenario())


def test_discord_app_commands_components_modals_and_context_menus() -> None:
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            with fake.patch_discord():
                client = _client()
                tree = app_commands.CommandTree(client)
                events: list[str] = []

                class Feedback(discord.ui.Modal, title="Feedback"):
                    reason: discord.ui.TextInput[Any] = discord.ui.TextInput(
                        label="Why?", custom_id="reason"
                    )

                    async def on_submit(self, interaction: discord.Interaction) -> None:
                        events.append(f"modal:{self.reason.value}")
                        await interaction.response.send_message("thanks", ephemeral=True)

                class Rate(discord.ui.View):
                    @discord.ui.button(label="Good", custom_id="rate:good")
                    async def good(
                        self, interaction: discord.Interaction, button: discord.ui.Button[Any]
                    ) -> None:
                        events.append("button")
                        await interaction.response.send_modal(Feedback(custom_id="feedback"))

                @tree.command(name="ask", description="Ask the bot")
                async def ask(interaction: discord.Interaction, question: str, n: int) -> None:
                    events.append(f"ask:{question}:{n}")
                    await interaction.response.send_message(f"answer to {question}", view=Rate())

                @tree.command(name="slow", description="Deferred")
                async def slow(interaction: discord.Interaction) -> None:
                    await interaction.response.defer(thinking=True)
                    await interaction.edit_original_response(content="done thinking")
                    await interaction.followup.send("and a followup")

                @tree.context_menu(name="Remember")
                async def remember(
                    interaction: discord.Interaction, message: discord.Message
                ) -> None:
                    events.append(f"remember:{message.content}")
                    await interaction.response.send_message("remembered", ephemeral=True)

                async with fake.running_client(client):
                    synced = await tree.sync()
                    assert sorted(c.name for c in synced) == ["Remember", "ask", "slow"]
                    assert {c["name"] for c in fake.commands()} == {"Remember", "ask", "slow"}

                    ask_i = dfake.interaction_app_command("ask", {"question": "why", "n": 3})
                    await fake.dispatch("INTERACTION_CREATE", ask_i)
                    await fake.wait_for_request(
                        "POST", "/interactions/{interaction_id}/{token}/callback"
                    )
                    answer = fake.bot_messages(dfake.DEFAULT_CHANNEL_ID)[-1]
                    assert answer["content"] == "answer to why" and answer["type"] == 20
                    assert answer["components"][0]["components"][0]["custom_id"] == "rate:good"

                    click = dfake.interaction_component("rate:good", message=answer)
                    await fake.dispatch("INTERACTION_CREATE", click)
                    await _until(lambda: bool(fake.interaction_responses(click["id"])), "modal")
                    modal = fake.interaction_responses(click["id"])[0]
                    assert modal["type"] == 9 and modal["data"]["custom_id"] == "feedback"

                    submit = dfake.interaction_modal_submit("feedback", {"reason": "clear"})
                    await fake.dispatch("INTERACTION_CREATE", submit)
                    await _until(lambda: bool(fake.interaction_responses(submit["id"])), "thanks")
                    thanks = fake.interaction_responses(submit["id"])[0]
                    assert thanks["type"] == 4 and thanks["data"]["flags"] == 64

                    slow_i = dfake.interaction_app_command("slow")
                    await fake.dispatch("INTERACTION_CREATE", slow_i)
                    await fake.wait_for_request("POST", "/webhooks/{application_id}/{token}")
                    assert [r["type"] for r in fake.interaction_responses(slow_i["id"])] == [5]
                    last_two = [m["content"] for m in fake.bot_messages()[-2:]]
                    assert last_two == ["done thinking", "and a followup"]

                    target = fake.messages(dfake.DEFAULT_CHANNEL_ID)[0]
                    menu = dfake.interaction_message_context_menu("Remember", target=target)
                    await fake.dispatch("INTERACTION_CREATE", menu)
                    await _until(lambda: bool(fake.interaction_responses(menu["id"])), "menu")

                    # As on Discord, an interaction cannot be acknowledged twice.
                    url = f"{fake.api_base}/interactions/{ask_i['id']}/{ask_i['token']}/callback"
                    async with (
                        aiohttp.ClientSession() as http,
                        http.post(url, json={"type": 4, "data": {"content": "again"}}) as resp,
                    ):
                        assert resp.status == 400 and (await resp.json())["code"] == 40060

                assert events == ["ask:why:3", "button", "modal:clear", "remember:answer to why"]

    run(scenario())
