"""A local fake of Discord (REST API v10 and the Gateway) for the real discord.py client.

``FakeDiscord`` is an aiohttp server started inside the running event loop::

    async with FakeDiscord() as fake:
        with fake.patch_discord():                      # Route.BASE + DEFAULT_GATEWAY
            client = discord.Client(intents=intents, guild_ready_timeout=0.1)
            async with fake.running_client(client):    # start, wait for on_ready ... close
                await fake.dispatch("MESSAGE_CREATE", message_create("hi"))
                await fake.wait_for_request("POST", "/channels/{channel_id}/messages")

How discord.py finds it: REST URLs are ``discord.http.Route.BASE + path`` (the interaction
and webhook adapter uses the same ``Route``), so ``Route.BASE = fake.api_base`` redirects all
REST traffic. A plain ``Client`` does *not* ask ``GET /gateway/bot`` for the gateway URL
(only ``AutoShardedClient`` does): it connects to the class attribute
``DiscordWebSocket.DEFAULT_GATEWAY`` and, after READY, to ``resume_gateway_url``.
``patch_discord()`` sets both class attributes and restores them.

Gateway: the client connects with ``?v=10&encoding=json&compress=zlib-stream`` (or
``zstd-stream`` when the ``zstandard`` package is installed). The fake honours zlib-stream
(one zlib context per connection, each payload ending in a Z_SYNC_FLUSH, sent as binary
frames, exactly what discord.py's decompressor expects) and answers anything else with plain
text frames, which discord.py always accepts. Opcodes: HELLO (10) on connect, HEARTBEAT (1) ->
HEARTBEAT_ACK (11), IDENTIFY (2) -> READY + one GUILD_CREATE per guild, RESUME (6) -> replay of
every dispatch after the client's ``seq`` then RESUMED (or INVALID_SESSION (9) if the session
is unknown), REQUEST_GUILD_MEMBERS (8) -> GUILD_MEMBERS_CHUNK, PRESENCE_UPDATE (3) recorded.
Close codes as Discord: 4004 bad token, 4005 identified twice, 4013 no intents, 4014
disallowed (privileged) intents, 4012 wrong API version, 4001 unknown opcode.

Realism the tests can lean on:

* intents are enforced: message/reaction/typing dispatches need the matching GUILD_* or
  DIRECT_* intent, and without MESSAGE_CONTENT a guild message that neither mentions the bot
  nor is the bot's own arrives with empty ``content``/``embeds``/``attachments``/``components``;
* the bot's own REST actions are echoed back through the gateway (MESSAGE_CREATE/UPDATE/
  DELETE, MESSAGE_REACTION_ADD/REMOVE), as Discord does, so a bot that answers itself loops;
* REST validation of the common mistakes: empty message (50006), content over 2000 chars
  (50035), unknown channel (10003) / message (10008) / interaction (10062), editing someone
  else's message (50005), acknowledging an interaction twice (40060), bad token (401);
* rate-limit headers on every answer and injectable 429s carrying what discord.py reads
  (``retry_after``/``global`` in the JSON body, ``X-RateLimit-*`` and ``Via`` headers: without
  ``Via`` discord.py takes a 429 for a Cloudflare ban and raises instead of retrying).

Deliberately not covered: voice, sharding (one session), ETF encoding, zstd compression,
permissions and role hierarchy (the bot may do anything in any known channel), threads,
files/attachments content (multipart ``payload_json`` is parsed, file parts are ignored),
audit logs, auto-moderation, Discord's real rate limits (only injected ones), and the
privileged-intent approval flow beyond ``disallowed_intents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    import discord

__all__ = [
    "API_VERSION",
    "DEFAULT_APPLICATION_ID",
    "DEFAULT_BOT_TOKEN",
    "DEFAULT_BOT_USER",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_DM_CHANNEL_ID",
    "DEFAULT_GUILD_ID",
    "DEFAULT_USER",
    "DEFAULT_USER_ID",
    "FakeDiscord",
    "Intents",
    "RecordedRequest",
    "dm_channel_payload",
    "dm_message_create",
    "guild_payload",
    "import_discord",
    "interaction_app_command",
    "interaction_component",
    "interaction_message_context_menu",
    "interaction_modal_submit",
    "member_payload",
    "message_create",
    "message_payload",
    "new_snowflake",
    "reaction_add",
    "role_payload",
    "text_channel_payload",
    "user_payload",
]

JSON = dict[str, Any]
API_VERSION = 10
DISCORD_EPOCH_MS = 1_420_070_400_000

DEFAULT_BOT_TOKEN = "ZmFrZS1ib3Q.fake-discord.token-for-tests"
DEFAULT_APPLICATION_ID = "1100000000000000001"
DEFAULT_BOT_USER_ID = DEFAULT_APPLICATION_ID  # for current apps the bot user id is the app id
DEFAULT_GUILD_ID = "1100000000000000100"
DEFAULT_CHANNEL_ID = "1100000000000000200"
DEFAULT_USER_ID = "1100000000000000300"
DEFAULT_DM_CHANNEL_ID = "1100000000000000400"

# Interaction callback and message flag values used below.
_EPHEMERAL = 1 << 6
_LOADING = 1 << 7


class Intents:
    """Gateway intent bits (discord.com/developers/docs/events/gateway#list-of-intents)."""

    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1  # privileged
    GUILD_MODERATION = 1 << 2
    GUILD_EXPRESSIONS = 1 << 3
    GUILD_INTEGRATIONS = 1 << 4
    GUILD_WEBHOOKS = 1 << 5
    GUILD_INVITES = 1 << 6
    GUILD_VOICE_STATES = 1 << 7
    GUILD_PRESENCES = 1 << 8  # privileged
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    GUILD_MESSAGE_TYPING = 1 << 11
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    DIRECT_MESSAGE_TYPING = 1 << 14
    MESSAGE_CONTENT = 1 << 15  # privileged
    PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT


# event -> (intent needed in a guild, intent needed in a DM)
_EVENT_INTENTS: dict[str, tuple[int, int]] = {
    "MESSAGE_CREATE": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_DELETE": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_DELETE_BULK": (Intents.GUILD_MESSAGES, Intents.DIRECT_MESSAGES),
    "MESSAGE_REACTION_ADD": (Intents.GUILD_MESSAGE_REACTIONS, Intents.DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (
        Intents.GUILD_MESSAGE_REACTIONS,
        Intents.DIRECT_MESSAGE_REACTIONS,
    ),
    "MESSAGE_REACTION_REMOVE_ALL": (
        Intents.GUILD_MESSAGE_REACTIONS,
        Intents.DIRECT_MESSAGE_REACTIONS,
    ),
    "TYPING_START": (Intents.GUILD_MESSAGE_TYPING, Intents.DIRECT_MESSAGE_TYPING),
    "GUILD_MEMBER_ADD": (Intents.GUILD_MEMBERS, Intents.GUILD_MEMBERS),
    "GUILD_MEMBER_UPDATE": (Intents.GUILD_MEMBERS, Intents.GUILD_MEMBERS),
    "GUILD_MEMBER_REMOVE": (Intents.GUILD_MEMBERS, Intents.GUILD_MEMBERS),
    "PRESENCE_UPDATE": (Intents.GUILD_PRESENCES, Intents.GUILD_PRESENCES),
}
_CONTENT_FIELDS = ("content", "embeds", "attachments", "components")


# --------------------------------------------------------------------------------------
# ids, time, importing discord.py
# --------------------------------------------------------------------------------------

_snowflake_lock = threading.Lock()
_last_snowflake = [0]


def new_snowflake() -> str:
    """A fresh Discord snowflake (as a string), strictly increasing in this process."""
    with _snowflake_lock:
        value = max((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22, _last_snowflake[0] + 1)
        _last_snowflake[0] = value
    return str(value)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def import_discord() -> Any:
    """Import discord.py without tripping ``-W error``.

    On Python 3.11 ``discord.player`` imports the stdlib ``audioop`` module, which emits a
    DeprecationWarning at import time; under ``filterwarnings = error`` that import fails.
    This imports it once with exactly that warning ignored and returns the module.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
        import discord as module
        import discord.ext.commands
    return module


# --------------------------------------------------------------------------------------
# payload builders (Discord API object shapes, docs: discord.com/developers/docs/resources)
# --------------------------------------------------------------------------------------


def user_payload(
    user_id: str = DEFAULT_USER_ID,
    username: str = "alice",
    *,
    bot: bool = False,
    global_name: str | None = None,
) -> JSON:
    """A user object (new-style username, discriminator ``"0"``)."""
    user: JSON = {
        "id": str(user_id),
        "username": username,
        "discriminator": "0",
        "global_name": global_name if global_name is not None else username.title(),
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "collectibles": None,
        "primary_guild": None,
    }
    if bot:
        user["bot"] = True
        user["global_name"] = global_name
    return user


DEFAULT_USER = user_payload()
DEFAULT_BOT_USER = user_payload(DEFAULT_BOT_USER_ID, "fakebot", bot=True)


def member_payload(
    user: Mapping[str, Any], *, roles: Sequence[str] = (), nick: str | None = None
) -> JSON:
    """A guild member object wrapping ``user``."""
    return {
        "user": dict(user),
        "nick": nick,
        "avatar": None,
        "banner": None,
        "roles": [str(r) for r in roles],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }


def _partial_member(member: Mapping[str, Any]) -> JSON:
    """A member as embedded in MESSAGE_CREATE (no ``user``)."""
    return {k: v for k, v in member.items() if k != "user"}


def role_payload(
    role_id: str, name: str, *, permissions: int = 0x0000_0000_7FFF_FFFF, position: int = 0
) -> JSON:
    """A role object (``@everyone`` has the guild's id)."""
    return {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def text_channel_payload(
    channel_id: str = DEFAULT_CHANNEL_ID,
    name: str = "general",
    *,
    guild_id: str = DEFAULT_GUILD_ID,
    position: int = 0,
    parent_id: str | None = None,
    topic: str | None = None,
) -> JSON:
    """A guild text channel (type 0)."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": parent_id,
        "topic": topic,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def dm_channel_payload(channel_id: str, recipient: Mapping[str, Any]) -> JSON:
    """A DM channel (type 1) with one recipient."""
    return {
        "id": str(channel_id),
        "type": 1,
        "last_message_id": None,
        "flags": 0,
        "recipients": [dict(recipient)],
    }


def guild_payload(
    guild_id: str = DEFAULT_GUILD_ID,
    name: str = "Fake Guild",
    *,
    owner_id: str = DEFAULT_USER_ID,
    channels: Sequence[Mapping[str, Any]] | None = None,
    members: Sequence[Mapping[str, Any]] | None = None,
    roles: Sequence[Mapping[str, Any]] | None = None,
) -> JSON:
    """A guild as sent in GUILD_CREATE.

    Defaults: one ``#general`` text channel, the ``@everyone`` role, and two members: the
    default user ("alice", the owner) and the default bot user.
    """
    guild_id = str(guild_id)
    chans = [dict(c) for c in (channels or [text_channel_payload(guild_id=guild_id)])]
    mems = [
        dict(m)
        for m in (members or [member_payload(DEFAULT_USER), member_payload(DEFAULT_BOT_USER)])
    ]
    return {
        "id": guild_id,
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [dict(r) for r in (roles or [role_payload(guild_id, "@everyone")])],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": chans[0]["id"] if chans else None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_members": 500_000,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "nsfw": False,
        "incidents_data": None,
        # GUILD_CREATE extras
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "large": False,
        "unavailable": False,
        "member_count": len(mems),
        "voice_states": [],
        "members": mems,
        "channels": chans,
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "lazy": True,
    }


_MENTION = re.compile(r"<@!?(\d+)>")


def _mentions_in(content: str) -> list[JSON]:
    ids = dict.fromkeys(_MENTION.findall(content))
    return [user_payload(uid, f"user{uid[-4:]}") for uid in ids]


def message_payload(
    content: str,
    *,
    channel_id: str,
    author: Mapping[str, Any],
    message_id: str | None = None,
    guild_id: str | None = None,
    member: Mapping[str, Any] | None = None,
    embeds: Sequence[Mapping[str, Any]] = (),
    components: Sequence[Mapping[str, Any]] = (),
    attachments: Sequence[Mapping[str, Any]] = (),
    flags: int = 0,
    message_type: int = 0,
    mentions: Sequence[Mapping[str, Any]] | None = None,
    referenced_message: Mapping[str, Any] | None = None,
    **extra: Any,
) -> JSON:
    """A message object. Mentions default to the ``<@id>`` found in ``content``."""
    msg: JSON = {
        "id": message_id or new_snowflake(),
        "channel_id": str(channel_id),
        "author": dict(author),
        "content": content,
        "timestamp": _now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [dict(m) for m in mentions] if mentions is not None else _mentions_in(content),
        "mention_roles": [],
        "attachments": [dict(a) for a in attachments],
        "embeds": [dict(e) for e in embeds],
        "pinned": False,
        "type": message_type,
        "flags": flags,
        "components": [dict(c) for c in components],
    }
    if guild_id is not None:
        msg["guild_id"] = str(guild_id)
    if member is not None:
        msg["member"] = _partial_member(member)
    if referenced_message is not None:
        msg["type"] = 19
        msg["message_reference"] = {
            "type": 0,
            "message_id": referenced_message["id"],
            "channel_id": referenced_message["channel_id"],
            **({"guild_id": str(guild_id)} if guild_id else {}),
        }
        msg["referenced_message"] = dict(referenced_message)
    msg.update(extra)
    return msg


def message_create(
    content: str,
    *,
    author: Mapping[str, Any] | None = None,
    channel_id: str = DEFAULT_CHANNEL_ID,
    guild_id: str = DEFAULT_GUILD_ID,
    message_id: str | None = None,
    reply_to: Mapping[str, Any] | None = None,
    **extra: Any,
) -> JSON:
    """MESSAGE_CREATE data for a user's message in a guild channel (default: alice in #general).

    ``reply_to``: a message dict (e.g. from ``fake.messages(...)``) this message replies to.
    """
    user = dict(author or DEFAULT_USER)
    return message_payload(
        content,
        channel_id=channel_id,
        author=user,
        guild_id=guild_id,
        member=member_payload(user),
        message_id=message_id,
        referenced_message=reply_to,
        **extra,
    )


def dm_message_create(
    content: str,
    *,
    author: Mapping[str, Any] | None = None,
    channel_id: str = DEFAULT_DM_CHANNEL_ID,
    message_id: str | None = None,
    **extra: Any,
) -> JSON:
    """MESSAGE_CREATE data for a direct message to the bot (no ``guild_id``)."""
    return message_payload(
        content,
        channel_id=channel_id,
        author=dict(author or DEFAULT_USER),
        message_id=message_id,
        **extra,
    )


def reaction_add(
    emoji: str,
    *,
    message_id: str,
    channel_id: str = DEFAULT_CHANNEL_ID,
    guild_id: str | None = DEFAULT_GUILD_ID,
    user: Mapping[str, Any] | None = None,
    message_author_id: str | None = DEFAULT_BOT_USER_ID,
    emoji_id: str | None = None,
) -> JSON:
    """MESSAGE_REACTION_ADD data (``guild_id=None`` for a DM). ``emoji`` is the unicode
    character or, with ``emoji_id``, a custom emoji name."""
    who = dict(user or DEFAULT_USER)
    data: JSON = {
        "user_id": who["id"],
        "channel_id": str(channel_id),
        "message_id": str(message_id),
        "emoji": {"id": emoji_id, "name": emoji},
        "burst": False,
        "burst_colors": [],
        "type": 0,
    }
    if message_author_id is not None:
        data["message_author_id"] = message_author_id
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
        data["member"] = member_payload(who)
    return data


def _interaction(
    interaction_type: int,
    data: JSON | None,
    *,
    user: Mapping[str, Any] | None,
    guild_id: str | None,
    channel_id: str | None,
    message: Mapping[str, Any] | None = None,
    application_id: str = DEFAULT_APPLICATION_ID,
    locale: str = "en-US",
) -> JSON:
    who = dict(user or DEFAULT_USER)
    if channel_id is None:
        channel_id = DEFAULT_CHANNEL_ID if guild_id is not None else DEFAULT_DM_CHANNEL_ID
    payload: JSON = {
        "id": new_snowflake(),
        "application_id": str(application_id),
        "type": interaction_type,
        "token": f"aW50ZXJhY3Rpb24.{uuid.uuid4().hex}",
        "version": 1,
        "locale": locale,
        "app_permissions": str((1 << 50) - 1),
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": 10 * 1024 * 1024,
        "channel_id": str(channel_id),
    }
    if data is not None:
        payload["data"] = data
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["guild_locale"] = "en-US"
        payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
        payload["channel"] = text_channel_payload(channel_id, guild_id=guild_id)
        member = member_payload(who)
        member["permissions"] = str((1 << 50) - 1)
        payload["member"] = member
        payload["context"] = 0
        payload["authorizing_integration_owners"] = {"0": str(guild_id)}
    else:
        payload["user"] = who
        payload["channel"] = dm_channel_payload(channel_id, who)
        payload["context"] = 1
        payload["authorizing_integration_owners"] = {"1": who["id"]}
    if message is not None:
        payload["message"] = dict(message)
    return payload


def interaction_component(
    custom_id: str,
    *,
    message: Mapping[str, Any],
    component_type: int = 2,
    values: Sequence[str] | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: str | None = DEFAULT_GUILD_ID,
    channel_id: str | None = None,
    application_id: str = DEFAULT_APPLICATION_ID,
) -> JSON:
    """INTERACTION_CREATE data for a click on a component (type 3).

    ``message`` is the message carrying the component, usually the bot's own message from
    ``fake.messages(channel_id)`` (discord.py routes the click to the View stored for that
    message id). ``component_type``: 2 button, 3 string select (give ``values``), ...
    """
    data: JSON = {"custom_id": custom_id, "component_type": component_type}
    if values is not None:
        data["values"] = list(values)
    return _interaction(
        3,
        data,
        user=user,
        guild_id=guild_id,
        channel_id=channel_id or str(message["channel_id"]),
        message=message,
        application_id=application_id,
    )


def interaction_modal_submit(
    custom_id: str,
    values: Mapping[str, str],
    *,
    message: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: str | None = DEFAULT_GUILD_ID,
    channel_id: str | None = None,
    application_id: str = DEFAULT_APPLICATION_ID,
    labels: bool = False,
) -> JSON:
    """INTERACTION_CREATE data for a modal submission (type 5).

    ``values`` maps each text input's ``custom_id`` to the submitted text. Components come
    wrapped in action rows (type 1), or in Label components (type 18) with ``labels=True``.
    """
    rows: list[JSON] = []
    for index, (input_id, value) in enumerate(values.items(), start=1):
        text_input = {"type": 4, "id": index * 2, "custom_id": input_id, "value": value}
        if labels:
            rows.append({"type": 18, "id": index * 2 - 1, "component": text_input})
        else:
            rows.append({"type": 1, "id": index * 2 - 1, "components": [text_input]})
    return _interaction(
        5,
        {"custom_id": custom_id, "components": rows},
        user=user,
        guild_id=guild_id,
        channel_id=channel_id,
        message=message,
        application_id=application_id,
    )


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def interaction_app_command(
    name: str,
    options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    command_id: str | None = None,
    command_guild_id: str | None = None,
    resolved: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: str | None = DEFAULT_GUILD_ID,
    channel_id: str | None = None,
    application_id: str = DEFAULT_APPLICATION_ID,
) -> JSON:
    """INTERACTION_CREATE data for a slash command (type 2, command type 1).

    ``options``: either raw option objects, or ``{name: value}`` (types inferred: str 3,
    int 4, bool 5, float 10). ``command_guild_id`` marks a guild-registered command.
    discord.py finds the command by name; the id is not checked.
    """
    if options is None:
        opts: list[JSON] = []
    elif isinstance(options, Mapping):
        opts = [{"name": k, "type": _option_type(v), "value": v} for k, v in options.items()]
    else:
        opts = [dict(o) for o in options]
    data: JSON = {"id": command_id or new_snowflake(), "name": name, "type": 1, "options": opts}
    if command_guild_id is not None:
        data["guild_id"] = str(command_guild_id)
    if resolved is not None:
        data["resolved"] = dict(resolved)
    return _interaction(
        2,
        data,
        user=user,
        guild_id=guild_id,
        channel_id=channel_id,
        application_id=application_id,
    )


def interaction_message_context_menu(
    name: str,
    *,
    target: Mapping[str, Any],
    command_id: str | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: str | None = DEFAULT_GUILD_ID,
    application_id: str = DEFAULT_APPLICATION_ID,
) -> JSON:
    """INTERACTION_CREATE data for a message context-menu command (type 2, command type 3)
    invoked on the message ``target``."""
    data: JSON = {
        "id": command_id or new_snowflake(),
        "name": name,
        "type": 3,
        "target_id": str(target["id"]),
        "resolved": {"messages": {str(target["id"]): dict(target)}},
    }
    return _interaction(
        2,
        data,
        user=user,
        guild_id=guild_id,
        channel_id=str(target["channel_id"]),
        application_id=application_id,
    )


# --------------------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One REST request and the fake's answer.

    ``path`` is relative to ``api_base`` (``/channels/123/messages``); ``route`` is the
    matched template (``/channels/{channel_id}/messages``), or ``path`` if nothing matched.
    ``json`` is the JSON body, or the ``payload_json`` part of a multipart body.
    """

    method: str
    path: str
    route: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    status: int
    response: Any


@dataclass
class _Failure:
    method: str
    path: str
    status: int
    retry_after: float
    is_global: bool
    times: int
    code: int
    message: str | None
    cloudflare: bool

    def matches(self, method: str, path: str, route: str) -> bool:
        return self.method in ("*", method) and self.path in ("*", path, route)


@dataclass
class _Interaction:
    data: JSON
    acknowledged: bool = False
    original_id: str | None = None
    followups: list[str] = field(default_factory=list)


class _GatewayConnection:
    """One websocket; serialises sends and owns the zlib-stream context."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, compress: str | None):
        self.ws = ws
        self.request = request
        self.compress = compress
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._lock = asyncio.Lock()
        self.identified = False

    async def send(self, payload: Mapping[str, Any]) -> bool:
        text = json.dumps(payload, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                if self._zlib is not None:
                    data = self._zlib.compress(text.encode("utf-8"))
                    await self.ws.send_bytes(data + self._zlib.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
        return True


@dataclass
class _Session:
    session_id: str
    intents: int
    seq: int = 0
    sent: list[JSON] = field(default_factory=list)
    conn: _GatewayConnection | None = None


_T = TypeVar("_T")


async def _poll(
    check: Callable[[], _T | None],
    timeout: float,  # noqa: ASYNC109 - a polling deadline, not a cancellation scope
    describe: Callable[[], str],
) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(describe())
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------
# the fake
# --------------------------------------------------------------------------------------

_Handler = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]


class FakeDiscord:
    """Discord REST v10 + Gateway on ``127.0.0.1:<free port>``, in the current event loop."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_BOT_TOKEN,
        application_id: str = DEFAULT_APPLICATION_ID,
        bot_user: Mapping[str, Any] | None = None,
        guilds: Sequence[Mapping[str, Any]] | None = None,
        users: Sequence[Mapping[str, Any]] = (),
        heartbeat_interval_ms: int = 41_250,
        echo_own_actions: bool = True,
        disallowed_intents: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the fake.

        ``guilds``: GUILD_CREATE payloads (default: ``[guild_payload()]``: "Fake Guild" with
        #general, alice and the bot). ``users``: more users ``GET /users/{id}`` and DMs know
        (guild members are known anyway). ``echo_own_actions``: echo the bot's REST actions
        as gateway dispatches, as Discord does. ``disallowed_intents``: intent bits the
        "developer portal" has not enabled; identifying with them closes with 4014.
        """
        self.token = token
        self.application_id = str(application_id)
        self.bot_user: JSON = dict(
            bot_user or user_payload(self.application_id, "fakebot", bot=True)
        )
        self.guilds: list[JSON] = [copy.deepcopy(dict(g)) for g in (guilds or [guild_payload()])]
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.echo_own_actions = echo_own_actions
        self.disallowed_intents = disallowed_intents
        self.host = host
        self._users: dict[str, JSON] = {self.bot_user["id"]: self.bot_user}
        for guild in self.guilds:
            for member in guild.get("members", []):
                self._users.setdefault(member["user"]["id"], member["user"])
        for user in users:
            self._users[str(user["id"])] = dict(user)
        self._dm_channels: dict[str, JSON] = {}
        self._messages: dict[str, dict[str, JSON]] = {}
        self._interactions: dict[str, _Interaction] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._interaction_responses: list[JSON] = []
        self._commands: dict[str | None, list[JSON]] = {}
        self._requests: list[RecordedRequest] = []
        self._failures: list[_Failure] = []
        self._received: list[JSON] = []
        self._connections: set[_GatewayConnection] = set()
        self._connection_count = 0
        self._connection_params: list[dict[str, str]] = []
        self._session: _Session | None = None
        self._gw_lock = asyncio.Lock()
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        """What ``discord.http.Route.BASE`` must be: ``http://127.0.0.1:PORT/api/v10``."""
        return f"http://{self.host}:{self._require_port()}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """The gateway websocket URL (also sent as ``url`` and ``resume_gateway_url``)."""
        return f"ws://{self.host}:{self._require_port()}/gateway"

    def _require_port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started")
        return self._port

    async def start(self) -> FakeDiscord:
        """Listen on a free port in the running loop; returns self."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(128)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner
        return self

    async def close(self) -> None:
        """Close gateway connections (1001), then the server."""
        self._closing = True
        self._accepting.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"fake shutting down"), 5)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py at the fake (REST base and default gateway), restore on exit."""
        discord = import_discord()
        import yarl

        targets: list[tuple[Any, str, Any]] = [
            (discord.http.Route, "BASE", self.api_base),
            (discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url)),
        ]
        saved = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]
        for obj, name, value in targets:
            setattr(obj, name, value)
        try:
            yield
        finally:
            for obj, name, value in saved:
                setattr(obj, name, value)

    @contextlib.asynccontextmanager
    async def running_client(
        self,
        client: discord.Client,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> AsyncIterator[discord.Client]:
        """Run ``client.start(token)`` in a task until ``on_ready``; close it on exit.

        Fails fast if login/connect fails, and with ``TimeoutError`` if READY does not come
        (remember ``guild_ready_timeout``: discord.py waits that long after the last
        GUILD_CREATE before ``on_ready``; pass e.g. ``guild_ready_timeout=0.1`` in tests).
        """
        discord_mod = import_discord()
        if self.api_base != discord_mod.http.Route.BASE:
            raise RuntimeError("discord.py is not pointed at this fake: use fake.patch_discord()")
        async with client:
            task = asyncio.create_task(client.start(self.token), name="discord-client")
            ready = asyncio.create_task(client.wait_until_ready())
            try:
                done, _ = await asyncio.wait(
                    {task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if ready not in done:
                    if task in done:
                        task.result()  # raises the login/connect error
                        raise RuntimeError("discord client stopped before it was ready")
                    raise TimeoutError(f"discord client not ready after {timeout}s")
                yield client
            finally:
                ready.cancel()
                await client.close()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout)

    # ---- test-facing gateway control -------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a gateway connection is attached to the session (after READY/RESUMED)."""
        return self._session is not None and self._session.conn is not None

    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    @property
    def sequence(self) -> int:
        """The last sequence number sent (or buffered) in the current session."""
        return self._session.seq if self._session else 0

    @property
    def connection_count(self) -> int:
        """How many gateway websockets were opened so far."""
        return self._connection_count

    @property
    def connection_params(self) -> list[dict[str, str]]:
        """The query of each gateway connection (``v``, ``encoding``, ``compress``)."""
        return [dict(p) for p in self._connection_params]

    def gateway_payloads(self, op: int | None = None) -> list[JSON]:
        """Payloads the client sent on the gateway (each ``{"op", "d", "connection"}``)."""
        return [copy.deepcopy(p) for p in self._received if op is None or p["op"] == op]

    async def wait_for_op(
        self,
        op: int,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[JSON]:
        """Wait until the client sent ``count`` gateway payloads with opcode ``op``."""

        def check() -> list[JSON] | None:
            found = self.gateway_payloads(op)
            return found if len(found) >= count else None

        return await _poll(
            check,
            timeout,
            lambda: f"waited for {count} x op {op}; got ops {[p['op'] for p in self._received]}",
        )

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the client is identified or resumed on a live connection."""
        await _poll(
            lambda: True if self.connected else None,
            timeout,
            lambda: "gateway client not connected",
        )

    async def dispatch(self, event: str, data: Mapping[str, Any]) -> int | None:
        """Send a DISPATCH (op 0) event to the client; returns its sequence number.

        Returns None when the session's intents filter the event out (as Discord would not
        send it). While the connection is dropped the event is buffered and replayed on
        RESUME. MESSAGE_CREATE/UPDATE/DELETE also update the fake's message store, and
        INTERACTION_CREATE registers the interaction so its callbacks can be answered.
        """
        payload = copy.deepcopy(dict(data))
        self._observe(event, payload)
        if self._session is None:
            raise RuntimeError(f"cannot dispatch {event}: no client has identified yet")
        return await self._dispatch(event, payload)

    async def drop_connection(
        self, code: int | None = 4000, *, hold_reconnect: bool = False
    ) -> None:
        """Drop the gateway connection so the client reconnects and RESUMEs.

        ``code``: the close code to send (4000 "unknown error" is resumable); ``None`` aborts
        the TCP connection without a close frame. ``hold_reconnect=True`` keeps the next
        connection waiting before HELLO until ``release_reconnect()``, so a test can
        dispatch events "during" the outage deterministically.
        """
        if hold_reconnect:
            self._accepting.clear()
        async with self._gw_lock:
            conns = list(self._connections)
            if self._session is not None:
                self._session.conn = None
        for conn in conns:
            if code is None:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.ws.close(code=code, message=b"fake drop"), 5)

    def release_reconnect(self) -> None:
        """Let a connection held by ``drop_connection(hold_reconnect=True)`` proceed."""
        self._accepting.set()

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: discord.py closes and resumes."""
        async with self._gw_lock:
            conn = self._session.conn if self._session else None
            if self._session is not None:
                self._session.conn = None
        if conn is not None:
            await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; non-resumable forgets the session (client re-IDENTIFYs)."""
        async with self._gw_lock:
            session = self._session
            conn = session.conn if session else None
            if session is not None:
                session.conn = None
                if not resumable:
                    self._session = None
        if conn is not None:
            await conn.send({"op": 9, "d": resumable, "s": None, "t": None})

    # ---- test-facing REST state ------------------------------------------------------

    def requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded REST requests; ``path`` matches the concrete path or the route template."""
        return [
            r
            for r in self._requests
            if (method is None or r.method == method)
            and (path is None or path in (r.path, r.route))
        ]

    async def wait_for_request(
        self,
        method: str,
        path: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        status: int | None = None,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Wait until ``count`` matching requests were recorded (optionally with ``status``)."""

        def check() -> list[RecordedRequest] | None:
            found = [
                r
                for r in self.requests(method, path)
                if (status is None or r.status == status) and (where is None or where(r))
            ]
            return found if len(found) >= count else None

        return await _poll(
            check,
            timeout,
            lambda: (
                f"waited for {count} x {method} {path}; got "
                f"{[(r.method, r.path, r.status) for r in self._requests]}"
            ),
        )

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int = 429,
        retry_after: float = 0.5,
        is_global: bool = False,
        times: int = 1,
        code: int = 0,
        message: str | None = None,
        cloudflare: bool = False,
    ) -> None:
        """Fail the next ``times`` requests matching ``method`` and ``path`` (``"*"``: any;
        ``path`` may be concrete or the route template).

        429: JSON ``{"message", "retry_after", "global", "code"}`` plus ``Retry-After``,
        ``X-RateLimit-*`` and ``Via`` headers, which discord.py honours by sleeping
        ``retry_after`` and retrying (``cloudflare=True`` omits ``Via`` and sends HTML,
        which discord.py raises as HTTPException). 500/502/504: discord.py retries after
        1 + 2*attempt seconds. Other statuses: ``{"message", "code"}`` (e.g. 403 + 50013).
        """
        self._failures.append(
            _Failure(method, path, status, retry_after, is_global, times, code, message, cloudflare)
        )

    def messages(self, channel_id: str) -> list[JSON]:
        """Current messages of a channel (oldest first): dispatched user messages and what
        the bot sent (REST and interaction responses), after edits, deletions, reactions."""
        return copy.deepcopy(list(self._messages.get(str(channel_id), {}).values()))

    def bot_messages(self, channel_id: str | None = None) -> list[JSON]:
        """Messages authored by the bot, in one channel or all (oldest first)."""
        channels = [str(channel_id)] if channel_id is not None else list(self._messages)
        found = [
            m
            for c in channels
            for m in self._messages.get(c, {}).values()
            if m["author"]["id"] == self.bot_user["id"]
        ]
        return copy.deepcopy(sorted(found, key=lambda m: int(m["id"])))

    def interaction_responses(self, interaction_id: str | None = None) -> list[JSON]:
        """Interaction callbacks received: ``{"interaction_id", "type", "data"}``."""
        return [
            copy.deepcopy(r)
            for r in self._interaction_responses
            if interaction_id is None or r["interaction_id"] == str(interaction_id)
        ]

    def commands(self, guild_id: str | None = None) -> list[JSON]:
        """Application commands registered globally (or for ``guild_id``)."""
        return copy.deepcopy(self._commands.get(guild_id, []))

    def dm_channel_id(self, user_id: str) -> str | None:
        """The DM channel the fake opened or saw for ``user_id``."""
        for channel in self._dm_channels.values():
            if channel["recipients"][0]["id"] == str(user_id):
                return str(channel["id"])
        return None

    # ---- internals: gateway ----------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def runner() -> None:
            with contextlib.suppress(Exception):
                await coro

        task = asyncio.create_task(runner())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wanted(self, intents: int, event: str, data: Mapping[str, Any]) -> bool:
        needed = _EVENT_INTENTS.get(event)
        if needed is None:
            return True
        in_guild = "guild_id" in data or event.startswith(("GUILD_", "PRESENCE"))
        return bool(intents & (needed[0] if in_guild else needed[1]))

    def _redact(self, intents: int, event: str, data: JSON) -> JSON:
        if intents & Intents.MESSAGE_CONTENT or event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            return data
        if "guild_id" not in data:
            return data  # DMs keep their content
        bot_id = self.bot_user["id"]
        if data.get("author", {}).get("id") == bot_id:
            return data
        if any(m.get("id") == bot_id for m in data.get("mentions", [])):
            return data
        redacted = dict(data)
        redacted["content"] = ""
        for key in ("embeds", "attachments", "components"):
            redacted[key] = []
        redacted.pop("poll", None)
        return redacted

    async def _dispatch(self, event: str, data: JSON) -> int | None:
        async with self._gw_lock:
            session = self._session
            if session is None or not self._wanted(session.intents, event, data):
                return None
            session.seq += 1
            frame = {
                "op": 0,
                "s": session.seq,
                "t": event,
                "d": self._redact(session.intents, event, data),
            }
            session.sent.append(frame)
            if session.conn is not None and not await session.conn.send(frame):
                session.conn = None
            return session.seq

    async def _echo(self, event: str, data: JSON) -> None:
        if self.echo_own_actions and self._session is not None:
            await self._dispatch(event, copy.deepcopy(data))

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = _GatewayConnection(ws, request, request.query.get("compress"))
        self._connections.add(conn)
        self._connection_count += 1
        self._connection_params.append(dict(request.query))
        index = self._connection_count
        try:
            if request.query.get("v") != str(API_VERSION):
                await ws.close(code=4012, message=b"Invalid API version")
                return ws
            if request.query.get("encoding", "json") != "json":
                await ws.close(code=4002, message=b"Decode error (only json is faked)")
                return ws
            await self._accepting.wait()
            if self._closing:
                return ws
            await conn.send(
                {
                    "op": 10,
                    "d": {
                        "heartbeat_interval": self.heartbeat_interval_ms,
                        "_trace": ['["fake-gateway",{}]'],
                    },
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                self._received.append(
                    {"op": payload.get("op"), "d": payload.get("d"), "connection": index}
                )
                await self._on_gateway_payload(conn, payload)
        finally:
            self._connections.discard(conn)
            async with self._gw_lock:
                if self._session is not None and self._session.conn is conn:
                    self._session.conn = None
        return ws

    async def _on_gateway_payload(self, conn: _GatewayConnection, payload: JSON) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._request_members(data or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: recorded only
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode")

    async def _identify(self, conn: _GatewayConnection, data: JSON) -> None:
        if conn.identified:
            await conn.ws.close(code=4005, message=b"Already authenticated")
            return
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed")
            return
        if "intents" not in data:
            await conn.ws.close(code=4013, message=b"Invalid intent(s)")
            return
        intents = int(data["intents"])
        if intents & self.disallowed_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s)")
            return
        conn.identified = True
        async with self._gw_lock:
            if self._session is not None and self._session.conn is not None:
                old = self._session.conn
                self._session.conn = None
                self._spawn(old.ws.close(code=4009, message=b"Session replaced"))
            self._session = _Session(uuid.uuid4().hex, intents, conn=conn)
        ready: JSON = {
            "v": API_VERSION,
            "user": {
                **self.bot_user,
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
                "premium_type": 0,
            },
            "user_settings": {},
            "session_type": "normal",
            "session_id": self._session.session_id,
            "resume_gateway_url": self.gateway_url,
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "guilds": [{"id": g["id"], "unavailable": True} for g in self.guilds],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "auth": {},
            "application": {"id": self.application_id, "flags": self._application_flags()},
            "_trace": ['["fake-gateway",{}]'],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        await self._dispatch("READY", ready)
        for guild in self.guilds:
            await self._dispatch("GUILD_CREATE", self._guild_create(guild, intents))

    def _guild_create(self, guild: JSON, intents: int) -> JSON:
        data = copy.deepcopy(guild)
        if not intents & Intents.GUILD_PRESENCES:
            # Without presences Discord only sends the bot's own member (and voice members).
            data["members"] = [
                m for m in data.get("members", []) if m["user"]["id"] == self.bot_user["id"]
            ]
        for channel in data.get("channels", []):
            channel.pop("guild_id", None)  # gateway guild channels carry no guild_id
        return data

    async def _resume(self, conn: _GatewayConnection, data: JSON) -> None:
        async with self._gw_lock:
            session = self._session
            if (
                session is None
                or data.get("session_id") != session.session_id
                or data.get("token") != self.token
            ):
                await conn.send({"op": 9, "d": False, "s": None, "t": None})
                return
            last = int(data.get("seq") or 0)
            if session.conn is not None and session.conn is not conn:
                self._spawn(session.conn.ws.close(code=4009, message=b"Resumed elsewhere"))
            conn.identified = True
            for frame in session.sent:
                if frame["s"] > last:
                    await conn.send(frame)
            session.seq += 1
            await conn.send(
                {
                    "op": 0,
                    "s": session.seq,
                    "t": "RESUMED",
                    "d": {"_trace": ['["fake-gateway",{}]']},
                }
            )
            session.conn = conn

    async def _request_members(self, data: JSON) -> None:
        guild = self._guild(str(data.get("guild_id")))
        if guild is None:
            return
        members = list(guild.get("members", []))
        query = data.get("query")
        if query:
            members = [m for m in members if m["user"]["username"].startswith(query)]
        if data.get("user_ids"):
            wanted = {str(u) for u in data["user_ids"]}
            members = [m for m in members if m["user"]["id"] in wanted]
        if data.get("limit"):
            members = members[: int(data["limit"])]
        chunk: JSON = {
            "guild_id": guild["id"],
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._dispatch("GUILD_MEMBERS_CHUNK", chunk)

    def _application_flags(self) -> int:
        # GATEWAY_PRESENCE_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED | ..._MESSAGE_CONTENT_LIMITED
        return (1 << 13) | (1 << 15) | (1 << 19) | (1 << 23)

    # ---- internals: state ------------------------------------------------------------

    def _guild(self, guild_id: str) -> JSON | None:
        return next((g for g in self.guilds if g["id"] == str(guild_id)), None)

    def _channel(self, channel_id: str) -> tuple[JSON, str | None] | None:
        """(channel, guild_id) for a known channel."""
        for guild in self.guilds:
            for channel in guild.get("channels", []):
                if channel["id"] == channel_id:
                    return {**channel, "guild_id": guild["id"]}, guild["id"]
        dm = self._dm_channels.get(channel_id)
        return (dm, None) if dm is not None else None

    def _member(self, guild_id: str, user_id: str) -> JSON | None:
        guild = self._guild(guild_id)
        if guild is None:
            return None
        return next((m for m in guild.get("members", []) if m["user"]["id"] == user_id), None)

    def _store(self, message: JSON) -> None:
        self._messages.setdefault(str(message["channel_id"]), {})[str(message["id"])] = message

    def _observe(self, event: str, data: JSON) -> None:
        if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE"):
            data["mentions"] = [
                self._users.get(str(m.get("id")), m) for m in data.get("mentions", [])
            ]
        if event == "MESSAGE_CREATE":
            if "guild_id" not in data and str(data["channel_id"]) not in self._dm_channels:
                author = data["author"]
                self._users.setdefault(author["id"], author)
                self._dm_channels[str(data["channel_id"])] = dm_channel_payload(
                    data["channel_id"], author
                )
            stored = {k: v for k, v in data.items() if k not in ("member",)}
            self._store(copy.deepcopy(stored))
        elif event == "MESSAGE_UPDATE":
            old = self._messages.get(str(data["channel_id"]), {}).get(str(data["id"]))
            if old is not None:
                old.update({k: v for k, v in data.items() if k != "member"})
        elif event == "MESSAGE_DELETE":
            self._messages.get(str(data["channel_id"]), {}).pop(str(data["id"]), None)
        elif event == "INTERACTION_CREATE":
            record = _Interaction(copy.deepcopy(data))
            self._interactions[str(data["id"])] = record
            self._interactions_by_token[str(data["token"])] = record
            if "guild_id" not in data:
                channel = data.get("channel") or {}
                if channel.get("id") and channel["id"] not in self._dm_channels:
                    self._dm_channels[channel["id"]] = dm_channel_payload(
                        channel["id"], data["user"]
                    )
        elif event == "GUILD_CREATE" and self._guild(str(data["id"])) is None:
            self.guilds.append(copy.deepcopy(data))

    # ---- internals: REST -------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        base = f"/api/v{API_VERSION}"
        routes: list[tuple[str, str, _Handler]] = [
            ("GET", "/gateway", self._r_gateway),
            ("GET", "/gateway/bot", self._r_gateway_bot),
            ("GET", "/users/@me", self._r_me),
            ("GET", "/users/{user_id}", self._r_user),
            ("POST", "/users/@me/channels", self._r_create_dm),
            ("GET", "/oauth2/applications/@me", self._r_application),
            ("GET", "/applications/@me", self._r_application),
            ("GET", "/channels/{channel_id}", self._r_get_channel),
            ("GET", "/channels/{channel_id}/messages", self._r_history),
            ("POST", "/channels/{channel_id}/messages", self._r_create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._r_get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._r_edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._r_delete_message),
            ("POST", "/channels/{channel_id}/typing", self._r_typing),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._r_add_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/{user_id}",
                self._r_remove_reaction,
            ),
            ("GET", "/applications/{application_id}/commands", self._r_get_commands),
            ("PUT", "/applications/{application_id}/commands", self._r_put_commands),
            ("POST", "/applications/{application_id}/commands", self._r_post_command),
            (
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._r_get_commands,
            ),
            (
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._r_put_commands,
            ),
            (
                "POST",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self._r_post_command,
            ),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._r_callback),
            ("POST", "/webhooks/{application_id}/{token}", self._r_followup),
            (
                "GET",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._r_webhook_get,
            ),
            (
                "PATCH",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._r_webhook_edit,
            ),
            (
                "DELETE",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._r_webhook_delete,
            ),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, base + path, self._wrap(handler))

    def _wrap(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            return await handler(request, await self._read_body(request))

        return run

    @staticmethod
    def _ratelimit_headers(
        route: str, remaining: int = 4, reset_after: float = 1.0
    ) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": uuid.uuid5(uuid.NAMESPACE_URL, route).hex[:32],
            "Via": "1.1 google",
        }

    def _json(self, data: Any, status: int = 200) -> web.Response:
        # Exactly "application/json": discord.py's json_or_text() compares the header
        # verbatim, and would hand "application/json; charset=utf-8" bodies back as str.
        return web.Response(
            body=json.dumps(data).encode("utf-8"),
            status=status,
            headers={"Content-Type": "application/json"},
        )

    def _error(self, status: int, code: int, message: str, **extra: Any) -> web.Response:
        return self._json({"message": message, "code": code, **extra}, status=status)

    def _no_content(self) -> web.Response:
        return web.Response(status=204)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        prefix = f"/api/v{API_VERSION}"
        if not request.path.startswith(prefix):
            return await handler(request)  # the gateway websocket
        path = request.path[len(prefix) :]
        resource = request.match_info.route.resource
        route = resource.canonical[len(prefix) :] if resource is not None else path
        body = await self._read_body(request)  # aiohttp caches it for the handler
        response: web.StreamResponse
        failure = next((f for f in self._failures if f.matches(request.method, path, route)), None)
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                self._failures.remove(failure)
            response = self._failure_response(failure, route)
        elif not self._authorized(request, route):
            response = self._error(401, 0, "401: Unauthorized")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = self._error(exc.status, 0, f"{exc.status}: {exc.reason}")
            for key, value in self._ratelimit_headers(route).items():
                response.headers.setdefault(key, value)
        self._requests.append(
            RecordedRequest(
                method=request.method,
                path=path,
                route=route,
                query=dict(request.query),
                json=body,
                headers=dict(request.headers),
                status=response.status,
                response=self._response_json(response),
            )
        )
        return response

    @staticmethod
    def _response_json(response: web.StreamResponse) -> Any:
        if isinstance(response, web.Response) and response.content_type == "application/json":
            raw = response.body
            if isinstance(raw, bytes) and raw:
                return json.loads(raw)
        return None

    def _authorized(self, request: web.Request, route: str) -> bool:
        if route == "/gateway" or route.startswith(("/interactions/", "/webhooks/")):
            return True
        return request.headers.get("Authorization") == f"Bot {self.token}"

    @staticmethod
    async def _read_body(request: web.Request) -> Any:
        if not request.body_exists:
            return None
        if request.content_type == "multipart/form-data":
            form = await request.post()
            raw = form.get("payload_json")
            return json.loads(raw) if isinstance(raw, str) else {}
        text = await request.text()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _failure_response(self, failure: _Failure, route: str) -> web.Response:
        if failure.status == 429:
            if failure.cloudflare:
                return web.Response(
                    status=429, text="<html>error code: 1015</html>", content_type="text/html"
                )
            body = {
                "message": failure.message or "You are being rate limited.",
                "retry_after": failure.retry_after,
                "global": failure.is_global,
                "code": 0,
            }
            response = self._json(body, status=429)
            headers = self._ratelimit_headers(route, remaining=0, reset_after=failure.retry_after)
            headers["Retry-After"] = str(math.ceil(failure.retry_after))
            headers["X-RateLimit-Scope"] = "global" if failure.is_global else "user"
            if failure.is_global:
                headers["X-RateLimit-Global"] = "true"
            response.headers.update(headers)
            return response
        reason = failure.message or f"{failure.status}: fake failure"
        return self._error(failure.status, failure.code, reason)

    # ---- REST handlers ---------------------------------------------------------------

    async def _r_gateway(self, request: web.Request, body: Any) -> web.StreamResponse:
        return self._json({"url": self.gateway_url})

    async def _r_gateway_bot(self, request: web.Request, body: Any) -> web.StreamResponse:
        return self._json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _r_me(self, request: web.Request, body: Any) -> web.StreamResponse:
        return self._json(
            {
                **self.bot_user,
                "verified": True,
                "mfa_enabled": False,
                "locale": "en-US",
                "premium_type": 0,
                "email": None,
            }
        )

    async def _r_user(self, request: web.Request, body: Any) -> web.StreamResponse:
        user = self._users.get(request.match_info["user_id"])
        return self._json(user) if user else self._error(404, 10013, "Unknown User")

    async def _r_application(self, request: web.Request, body: Any) -> web.StreamResponse:
        owner = user_payload(DEFAULT_USER_ID, "alice")
        return self._json(
            {
                "id": self.application_id,
                "name": self.bot_user["username"],
                "icon": None,
                "description": "A fake application",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "flags": self._application_flags(),
                "owner": owner,
                "team": None,
                "bot": self.bot_user,
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "tags": [],
                "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
                "integration_types_config": {"0": {}, "1": {}},
                "approximate_guild_count": len(self.guilds),
            }
        )

    async def _r_create_dm(self, request: web.Request, body: Any) -> web.StreamResponse:
        recipient = str((body or {}).get("recipient_id", ""))
        user = self._users.get(recipient)
        if user is None:
            return self._error(400, 50033, "Invalid Recipient(s)")
        existing = self.dm_channel_id(recipient)
        if existing is None:
            existing = new_snowflake()
            self._dm_channels[existing] = dm_channel_payload(existing, user)
        return self._json(self._dm_channels[existing])

    async def _r_get_channel(self, request: web.Request, body: Any) -> web.StreamResponse:
        found = self._channel(request.match_info["channel_id"])
        return self._json(found[0]) if found else self._error(404, 10003, "Unknown Channel")

    async def _r_history(self, request: web.Request, body: Any) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        if self._channel(channel_id) is None:
            return self._error(404, 10003, "Unknown Channel")
        msgs = sorted(self._messages.get(channel_id, {}).values(), key=lambda m: -int(m["id"]))
        if "before" in request.query:
            msgs = [m for m in msgs if int(m["id"]) < int(request.query["before"])]
        if "after" in request.query:
            msgs = [m for m in msgs if int(m["id"]) > int(request.query["after"])]
        return self._json(msgs[: int(request.query.get("limit", 50))])

    def _validate_content(self, body: Mapping[str, Any], *, creating: bool) -> web.Response | None:
        content = body.get("content")
        if isinstance(content, str) and len(content) > 2000:
            return self._error(
                400,
                50035,
                "Invalid Form Body",
                errors={
                    "content": {
                        "_errors": [
                            {
                                "code": "BASE_TYPE_MAX_LENGTH",
                                "message": "Must be 2000 or fewer in length.",
                            }
                        ]
                    }
                },
            )
        if creating and not any(
            body.get(k)
            for k in ("content", "embeds", "components", "sticker_ids", "poll", "attachments")
        ):
            return self._error(400, 50006, "Cannot send an empty message")
        return None

    def _bot_message(
        self, body: Mapping[str, Any], channel_id: str, guild_id: str | None, **extra: Any
    ) -> JSON:
        message = message_payload(
            str(body.get("content") or ""),
            channel_id=channel_id,
            author=self.bot_user,
            embeds=body.get("embeds") or (),
            components=body.get("components") or (),
            flags=int(body.get("flags") or 0),
            **extra,
        )
        if body.get("nonce") is not None:
            message["nonce"] = body["nonce"]
        message["mentions"] = [self._users.get(m["id"], m) for m in message["mentions"]]
        return message

    def _gateway_copy(self, message: JSON, guild_id: str | None) -> JSON:
        data = copy.deepcopy(message)
        if guild_id is not None:
            data["guild_id"] = guild_id
            member = self._member(guild_id, str(message["author"]["id"]))
            if member is not None:
                data["member"] = _partial_member(member)
        return data

    async def _r_create_message(self, request: web.Request, body: Any) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        found = self._channel(channel_id)
        if found is None:
            return self._error(404, 10003, "Unknown Channel")
        _, guild_id = found
        body = body if isinstance(body, dict) else {}
        invalid = self._validate_content(body, creating=True)
        if invalid is not None:
            return invalid
        referenced = None
        reference = body.get("message_reference")
        if reference:
            referenced = self._messages.get(str(reference.get("channel_id", channel_id)), {}).get(
                str(reference.get("message_id"))
            )
            if referenced is None and reference.get("fail_if_not_exists", True):
                return self._error(
                    400,
                    50035,
                    "Invalid Form Body",
                    errors={
                        "message_reference": {
                            "_errors": [
                                {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}
                            ]
                        }
                    },
                )
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            # Discord de-duplicates sends with the same nonce (for a few minutes).
            for existing in self._messages.get(channel_id, {}).values():
                mine = existing["author"]["id"] == self.bot_user["id"]
                if mine and existing.get("nonce") == nonce:
                    return self._json(existing)
        message = self._bot_message(body, channel_id, guild_id)
        if referenced is not None:
            message["type"] = 19
            message["message_reference"] = {
                "type": 0,
                "message_id": referenced["id"],
                "channel_id": referenced["channel_id"],
                **({"guild_id": guild_id} if guild_id else {}),
            }
            message["referenced_message"] = copy.deepcopy(referenced)
        self._store(message)
        await self._echo("MESSAGE_CREATE", self._gateway_copy(message, guild_id))
        return self._json(message)

    def _find(self, channel_id: str, message_id: str) -> JSON | None:
        return self._messages.get(channel_id, {}).get(message_id)

    async def _r_get_message(self, request: web.Request, body: Any) -> web.StreamResponse:
        message = self._find(request.match_info["channel_id"], request.match_info["message_id"])
        return self._json(message) if message else self._error(404, 10008, "Unknown Message")

    def _apply_edit(self, message: JSON, body: Mapping[str, Any]) -> None:
        for key in ("content", "embeds", "components", "attachments", "flags"):
            if key in body and body[key] is not None:
                message[key] = body[key]
        if "content" in body:
            message["mentions"] = _mentions_in(str(body.get("content") or ""))
        message["edited_timestamp"] = _now_iso()

    async def _r_edit_message(self, request: web.Request, body: Any) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        message = self._find(channel_id, request.match_info["message_id"])
        if message is None:
            return self._error(404, 10008, "Unknown Message")
        body = body if isinstance(body, dict) else {}
        if message["author"]["id"] != self.bot_user["id"] and set(body) - {"flags"}:
            return self._error(403, 50005, "Cannot edit a message authored by another user")
        invalid = self._validate_content(body, creating=False)
        if invalid is not None:
            return invalid
        self._apply_edit(message, body)
        found = self._channel(channel_id)
        await self._echo("MESSAGE_UPDATE", self._gateway_copy(message, found[1] if found else None))
        return self._json(message)

    async def _r_delete_message(self, request: web.Request, body: Any) -> web.StreamResponse:
        channel_id, message_id = request.match_info["channel_id"], request.match_info["message_id"]
        if self._messages.get(channel_id, {}).pop(message_id, None) is None:
            return self._error(404, 10008, "Unknown Message")
        found = self._channel(channel_id)
        event: JSON = {"id": message_id, "channel_id": channel_id}
        if found and found[1]:
            event["guild_id"] = found[1]
        await self._echo("MESSAGE_DELETE", event)
        return self._no_content()

    async def _r_typing(self, request: web.Request, body: Any) -> web.StreamResponse:
        if self._channel(request.match_info["channel_id"]) is None:
            return self._error(404, 10003, "Unknown Channel")
        return self._no_content()

    @staticmethod
    def _emoji(raw: str) -> JSON:
        text = unquote(raw)
        if ":" in text:
            name, emoji_id = text.split(":", 1)
            return {"id": emoji_id, "name": name}
        return {"id": None, "name": text}

    async def _reaction(self, request: web.Request, add: bool) -> web.StreamResponse:
        channel_id, message_id = request.match_info["channel_id"], request.match_info["message_id"]
        message = self._find(channel_id, message_id)
        if message is None:
            return self._error(404, 10008, "Unknown Message")
        emoji = self._emoji(request.match_info["emoji"])
        user_id = request.match_info.get("user_id", "@me")
        is_me = user_id in ("@me", self.bot_user["id"])
        reactions: list[JSON] = message.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"] == emoji), None)
        if add:
            if entry is None:
                entry = {
                    "emoji": emoji,
                    "count": 0,
                    "me": False,
                    "burst_me": False,
                    "me_burst": False,
                    "burst_count": 0,
                    "burst_colors": [],
                    "count_details": {"normal": 0, "burst": 0},
                }
                reactions.append(entry)
            if not entry["me"]:
                entry["me"] = True
                entry["count"] += 1
        elif entry is not None and (not is_me or entry["me"]):
            entry["count"] -= 1
            entry["me"] = entry["me"] and not is_me
            if entry["count"] <= 0:
                reactions.remove(entry)
        found = self._channel(channel_id)
        event: JSON = {
            "user_id": self.bot_user["id"] if is_me else user_id,
            "channel_id": channel_id,
            "message_id": message_id,
            "emoji": emoji,
            "burst": False,
            "type": 0,
        }
        if found and found[1]:
            event["guild_id"] = found[1]
        await self._echo("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", event)
        return self._no_content()

    async def _r_add_reaction(self, request: web.Request, body: Any) -> web.StreamResponse:
        return await self._reaction(request, add=True)

    async def _r_remove_reaction(self, request: web.Request, body: Any) -> web.StreamResponse:
        return await self._reaction(request, add=False)

    # -- application commands

    def _check_app(self, request: web.Request) -> web.Response | None:
        if request.match_info["application_id"] != self.application_id:
            return self._error(403, 50001, "Missing Access")
        return None

    def _command(
        self, data: Mapping[str, Any], guild_id: str | None, existing: Sequence[JSON]
    ) -> JSON:
        kind = int(data.get("type", 1))
        old = next((c for c in existing if c["name"] == data["name"] and c["type"] == kind), None)
        command: JSON = {
            "id": old["id"] if old else new_snowflake(),
            "application_id": self.application_id,
            "version": new_snowflake(),
            "type": kind,
            "name": data["name"],
            "description": data.get("description", ""),
            "options": list(data.get("options", [])),
            "default_member_permissions": data.get("default_member_permissions"),
            "dm_permission": data.get("dm_permission", True),
            "nsfw": bool(data.get("nsfw", False)),
            "integration_types": data.get("integration_types", [0]),
            "contexts": data.get("contexts"),
            "name_localizations": data.get("name_localizations"),
            "description_localizations": data.get("description_localizations"),
        }
        if guild_id is not None:
            command["guild_id"] = guild_id
        return command

    async def _r_get_commands(self, request: web.Request, body: Any) -> web.StreamResponse:
        return self._check_app(request) or self._json(
            self._commands.get(request.match_info.get("guild_id"), [])
        )

    async def _r_put_commands(self, request: web.Request, body: Any) -> web.StreamResponse:
        denied = self._check_app(request)
        if denied is not None:
            return denied
        guild_id = request.match_info.get("guild_id")
        existing = self._commands.get(guild_id, [])
        self._commands[guild_id] = [self._command(c, guild_id, existing) for c in body or []]
        return self._json(self._commands[guild_id])

    async def _r_post_command(self, request: web.Request, body: Any) -> web.StreamResponse:
        denied = self._check_app(request)
        if denied is not None:
            return denied
        guild_id = request.match_info.get("guild_id")
        existing = self._commands.setdefault(guild_id, [])
        command = self._command(body or {}, guild_id, existing)
        existing[:] = [c for c in existing if c["id"] != command["id"]] + [command]
        return self._json(command, status=201)

    # -- interactions

    def _interaction_message(self, record: _Interaction, body: Mapping[str, Any]) -> JSON:
        data = record.data
        channel_id = str(data.get("channel_id") or data.get("channel", {}).get("id"))
        who = data.get("member", {}).get("user") or data.get("user") or {}
        is_command = data["type"] == 2
        command_type = int(data.get("data", {}).get("type", 1)) if is_command else 0
        message_type = (20 if command_type == 1 else 23) if is_command else 0
        return self._bot_message(
            body,
            channel_id,
            data.get("guild_id"),
            message_type=message_type,
            webhook_id=self.application_id,
            application_id=self.application_id,
            interaction_metadata={
                "id": data["id"],
                "type": data["type"],
                "user": who,
                "authorizing_integration_owners": data.get("authorizing_integration_owners", {}),
            },
        )

    async def _publish(self, record: _Interaction, message: JSON) -> None:
        self._store(message)
        if not message["flags"] & _EPHEMERAL:
            await self._echo(
                "MESSAGE_CREATE", self._gateway_copy(message, record.data.get("guild_id"))
            )

    async def _r_callback(self, request: web.Request, body: Any) -> web.StreamResponse:
        record = self._interactions.get(request.match_info["interaction_id"])
        if record is None or record.data["token"] != request.match_info["token"]:
            return self._error(404, 10062, "Unknown interaction")
        if record.acknowledged:
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        body = body if isinstance(body, dict) else {}
        kind = int(body.get("type", 0))
        data = dict(body.get("data") or {})
        if kind not in (1, 4, 5, 6, 7, 8, 9, 10, 12):
            return self._error(400, 50035, "Invalid Form Body")
        if kind == 4:
            invalid = self._validate_content(data, creating=True)
            if invalid is not None:
                return invalid
        record.acknowledged = True
        self._interaction_responses.append(
            {"interaction_id": record.data["id"], "type": kind, "data": copy.deepcopy(data)}
        )
        message: JSON | None = None
        if kind == 4:
            message = self._interaction_message(record, data)
            await self._publish(record, message)
        elif kind == 5:
            message = self._interaction_message(record, {**data, "content": ""})
            message["flags"] = int(data.get("flags") or 0) | _LOADING
            self._store(message)
        elif kind == 7 and record.data.get("message"):
            original = record.data["message"]
            message = self._find(str(original["channel_id"]), str(original["id"]))
            if message is None:
                message = copy.deepcopy(original)
                self._store(message)
            self._apply_edit(message, data)
            await self._echo(
                "MESSAGE_UPDATE", self._gateway_copy(message, record.data.get("guild_id"))
            )
        if message is not None and kind in (4, 5):
            record.original_id = str(message["id"])
        if request.query.get("with_response") not in ("1", "true", "True"):
            return self._no_content()
        info: JSON = {"id": record.data["id"], "type": record.data["type"]}
        if message is not None:
            info["response_message_id"] = message["id"]
            info["response_message_loading"] = kind == 5
            info["response_message_ephemeral"] = bool(message["flags"] & _EPHEMERAL)
        resource: JSON = {"type": kind}
        if message is not None:
            resource["message"] = message
        return self._json({"interaction": info, "resource": resource})

    def _by_token(self, request: web.Request) -> _Interaction | None:
        if request.match_info["application_id"] != self.application_id:
            return None
        return self._interactions_by_token.get(request.match_info["token"])

    def _webhook_target(self, record: _Interaction, message_id: str) -> JSON | None:
        if message_id == "@original":
            if record.original_id is not None:
                message_id = record.original_id
            elif record.data.get("message") and record.acknowledged:
                message_id = str(record.data["message"]["id"])  # deferred update (type 6)
            else:
                return None
        channel_id = str(record.data.get("channel_id"))
        if message_id not in [record.original_id, *record.followups] and (
            not record.data.get("message") or str(record.data["message"]["id"]) != message_id
        ):
            return None
        return self._find(channel_id, message_id)

    async def _r_followup(self, request: web.Request, body: Any) -> web.StreamResponse:
        record = self._by_token(request)
        if record is None:
            return self._error(404, 10015, "Unknown Webhook")
        body = body if isinstance(body, dict) else {}
        invalid = self._validate_content(body, creating=True)
        if invalid is not None:
            return invalid
        message = self._interaction_message(record, body)
        record.followups.append(str(message["id"]))
        await self._publish(record, message)
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(message)
        return self._no_content()

    async def _r_webhook_get(self, request: web.Request, body: Any) -> web.StreamResponse:
        record = self._by_token(request)
        if record is None:
            return self._error(404, 10015, "Unknown Webhook")
        message = self._webhook_target(record, request.match_info["message_id"])
        return self._json(message) if message else self._error(404, 10008, "Unknown Message")

    async def _r_webhook_edit(self, request: web.Request, body: Any) -> web.StreamResponse:
        record = self._by_token(request)
        if record is None:
            return self._error(404, 10015, "Unknown Webhook")
        message = self._webhook_target(record, request.match_info["message_id"])
        if message is None:
            return self._error(404, 10008, "Unknown Message")
        body = body if isinstance(body, dict) else {}
        invalid = self._validate_content(body, creating=False)
        if invalid is not None:
            return invalid
        was_loading = bool(message["flags"] & _LOADING)
        self._apply_edit(message, body)
        message["flags"] = int(message["flags"]) & ~_LOADING
        guild_id = record.data.get("guild_id")
        if was_loading and not message["flags"] & _EPHEMERAL:
            message["edited_timestamp"] = None  # a deferred reply's first edit is its content
            await self._echo("MESSAGE_CREATE", self._gateway_copy(message, guild_id))
        elif not message["flags"] & _EPHEMERAL:
            await self._echo("MESSAGE_UPDATE", self._gateway_copy(message, guild_id))
        return self._json(message)

    async def _r_webhook_delete(self, request: web.Request, body: Any) -> web.StreamResponse:
        record = self._by_token(request)
        if record is None:
            return self._error(404, 10015, "Unknown Webhook")
        message = self._webhook_target(record, request.match_info["message_id"])
        if message is None:
            return self._error(404, 10008, "Unknown Message")
        self._messages.get(str(message["channel_id"]), {}).pop(str(message["id"]), None)
        return self._no_content()
