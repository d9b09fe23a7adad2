"""The Slack Web API calls chatloop makes: one typed method per call, errors mapped.

:class:`SlackApi` wraps two ``slack_sdk`` ``AsyncWebClient`` instances pointed at
``base_url`` (``settings.slack_api_url``; a local fake in tests):

- ``client``: every call that must land (post, final update, views, lookups). It
  retries 429 responses after their ``Retry-After`` (``AsyncRateLimitErrorRetryHandler``),
  500/503 responses (``AsyncServerErrorRetryHandler``) and dropped connections.
- ``best_effort``: interim edits of a reply that is still streaming. It does not
  wait out a 429: the streaming sink skips that edit and backs off, because the
  final edit carries the whole text anyway.

Every failure leaves this module as :class:`~bot.platforms.slack.errors.SlackApiFailure`.
slack_sdk logs full request and response bodies (message texts) at DEBUG, so its
logger is held at INFO whatever the root level is: chat text never reaches a log.

It knows Slack's Web API and nothing of the core, the database or Slack's inbound
payloads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.platforms.slack.errors import SlackApiFailure

WIRE_LOGGER = "bot.platforms.slack.wire"
"""Logger handed to slack_sdk and slack-bolt; never below INFO (their DEBUG logs carry bodies)."""


def wire_logger() -> logging.Logger:
    """The logger for slack_sdk / slack-bolt internals, pinned at INFO or above."""
    logger = logging.getLogger(WIRE_LOGGER)
    if logger.getEffectiveLevel() < logging.INFO or logger.level < logging.INFO:
        logger.setLevel(logging.INFO)
    return logger


def _map(method: str, exc: BaseException) -> SlackApiFailure:
    if isinstance(exc, SlackApiError):
        response: Any = exc.response
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        error = "unexpected response"
        data = getattr(response, "data", None)
        if isinstance(data, dict) and data.get("error"):
            error = str(data["error"])
        elif status:
            error = f"HTTP {status}"
        failure = SlackApiFailure(method, error, status=status)
        headers = getattr(response, "headers", None) or {}
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        failure.retry_after = _seconds(retry_after)
        return failure
    return SlackApiFailure(method, type(exc).__name__)


def _seconds(value: Any) -> float | None:
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class SlackApi:
    """The Web API methods the adapter uses. Keyword-only construction."""

    def __init__(
        self,
        *,
        token: str,
        base_url: str = "https://slack.com/api/",
        timeout_s: int = 30,
        rate_limit_retries: int = 2,
        server_error_retries: int = 2,
    ) -> None:
        if not base_url.endswith("/"):
            base_url += "/"  # urljoin would otherwise drop the last path segment
        self.base_url = base_url
        self.timeout_s = timeout_s
        logger = wire_logger()
        handlers: list[AsyncRetryHandler] = [
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            AsyncServerErrorRetryHandler(max_retry_count=server_error_retries),
        ]
        self.client = AsyncWebClient(
            token=token,
            base_url=base_url,
            timeout=timeout_s,
            logger=logger,
            retry_handlers=handlers,
        )
        self.best_effort = AsyncWebClient(
            token=token,
            base_url=base_url,
            timeout=timeout_s,
            logger=logger,
            retry_handlers=[AsyncConnectionErrorRetryHandler(max_retry_count=1)],
        )
        self._webhook_handlers = handlers

    async def _call(self, method: str, call: Awaitable[AsyncSlackResponse]) -> dict[str, Any]:
        try:
            response = await call
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise _map(method, exc) from exc
        data = response.data
        return data if isinstance(data, dict) else {}

    # identity ---------------------------------------------------------------------
    async def auth_test(self) -> dict[str, Any]:
        """``auth.test``: the bot's ``user_id``, ``bot_id`` and ``team_id``."""
        return await self._call("auth.test", self.client.auth_test())

    async def open_socket_url(self, app_token: str) -> str:
        """``apps.connections.open`` with the app-level token: a Socket Mode URL."""
        data = await self._call(
            "apps.connections.open", self.client.apps_connections_open(app_token=app_token)
        )
        return str(data.get("url", ""))

    # messages ---------------------------------------------------------------------
    async def post_message(
        self,
        *,
        channel: str,
        text: str,
        blocks: Sequence[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """``chat.postMessage``; returns the new message's ``ts``."""
        data = await self._call(
            "chat.postMessage",
            self.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=list(blocks) if blocks is not None else None,
                thread_ts=thread_ts or None,
                unfurl_links=False,
                unfurl_media=False,
            ),
        )
        return str(data.get("ts", ""))

    async def update_message(
        self,
        *,
        channel: str,
        ts: str,
        text: str,
        blocks: Sequence[dict[str, Any]] | None = None,
        best_effort: bool = False,
    ) -> None:
        """``chat.update``. ``best_effort`` edits are not retried on 429."""
        client = self.best_effort if best_effort else self.client
        await self._call(
            "chat.update",
            client.chat_update(
                channel=channel,
                ts=ts,
                text=text,
                blocks=list(blocks) if blocks is not None else [],
            ),
        )

    # streaming for AI apps (chat.startStream / appendStream / stopStream) ----------
    async def start_stream(
        self,
        *,
        channel: str,
        thread_ts: str,
        markdown_text: str,
        recipient_user_id: str = "",
        recipient_team_id: str = "",
    ) -> str:
        """``chat.startStream``: a streamed reply in a thread; returns its ``ts``.

        Outside DMs Slack requires the recipient user and team.
        """
        data = await self._call(
            "chat.startStream",
            self.client.chat_startStream(
                channel=channel,
                thread_ts=thread_ts,
                markdown_text=markdown_text,
                recipient_user_id=recipient_user_id or None,
                recipient_team_id=recipient_team_id or None,
            ),
        )
        return str(data.get("ts", ""))

    async def append_stream(self, *, channel: str, ts: str, markdown_text: str) -> None:
        """``chat.appendStream``: more Markdown for a streamed reply (not retried on 429)."""
        await self._call(
            "chat.appendStream",
            self.best_effort.chat_appendStream(channel=channel, ts=ts, markdown_text=markdown_text),
        )

    async def stop_stream(
        self,
        *,
        channel: str,
        ts: str,
        markdown_text: str = "",
        blocks: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """``chat.stopStream``: the last Markdown and ``blocks`` shown under the reply."""
        await self._call(
            "chat.stopStream",
            self.client.chat_stopStream(
                channel=channel,
                ts=ts,
                markdown_text=markdown_text or None,
                blocks=list(blocks) if blocks is not None else None,
            ),
        )

    async def delete_message(self, *, channel: str, ts: str) -> None:
        await self._call("chat.delete", self.client.chat_delete(channel=channel, ts=ts))

    async def post_ephemeral(
        self, *, channel: str, user: str, text: str, thread_ts: str | None = None
    ) -> None:
        """``chat.postEphemeral``: only ``user`` sees it (fails where the bot is not a member)."""
        await self._call(
            "chat.postEphemeral",
            self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts or None
            ),
        )

    async def respond(self, response_url: str, *, text: str, ephemeral: bool = True) -> None:
        """Answer through an interaction's ``response_url`` (works in any channel)."""
        webhook = AsyncWebhookClient(
            url=response_url,
            timeout=self.timeout_s,
            logger=wire_logger(),
            retry_handlers=self._webhook_handlers,
        )
        try:
            response = await webhook.send(
                text=text,
                response_type="ephemeral" if ephemeral else "in_channel",
                replace_original=False,
            )
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            raise _map("response_url", exc) from exc
        if response.status_code != 200:
            raise SlackApiFailure(
                "response_url", response.body or "error", status=response.status_code
            )

    # views ------------------------------------------------------------------------
    async def open_view(self, *, trigger_id: str, view: dict[str, Any]) -> None:
        """``views.open`` (the trigger id is valid for 3 s after the click)."""
        await self._call("views.open", self.client.views_open(trigger_id=trigger_id, view=view))

    # lookups ----------------------------------------------------------------------
    async def thread_messages(
        self, *, channel: str, thread_ts: str, max_pages: int = 5
    ) -> list[dict[str, Any]]:
        """``conversations.replies``: the messages of a thread (first ``max_pages`` pages)."""
        messages: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(max_pages):
            data = await self._call(
                "conversations.replies",
                self.client.conversations_replies(
                    channel=channel, ts=thread_ts, limit=200, cursor=cursor
                ),
            )
            messages.extend(m for m in data.get("messages", []) if isinstance(m, dict))
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not data.get("has_more", bool(cursor)):
                break
        return messages

    async def usergroup_members(self) -> dict[str, list[str]]:
        """``usergroups.list`` with members: user group id -> user ids."""
        data = await self._call("usergroups.list", self.client.usergroups_list(include_users=True))
        groups: dict[str, list[str]] = {}
        for group in data.get("usergroups", []):
            if isinstance(group, dict) and isinstance(group.get("id"), str):
                users = group.get("users") or []
                groups[group["id"]] = [u for u in users if isinstance(u, str)]
        return groups
