"""Slack payloads -> core events: pure functions, no I/O.

Decides what a Slack payload *means* for chatloop, never what to do about it:

- which message events are for the bot (:func:`message_kind`): mentions in
  channels, DMs, and replies in threads (whether the bot takes part in a thread
  is asked by the adapter, not here);
- where a conversation lives (:func:`place_of`): a channel thread is
  ``(channel, thread_ts or ts)``, a DM is ``(channel, thread_ts or "")``;
- Slack mrkdwn as plain text for the model (:func:`plain_text`): mentions,
  channel links, URLs and HTML entities resolved, the bot's own mention dropped;
- idempotency keys (:func:`message_key` and friends) the core claims in the
  database, so a retried or doubly delivered event is answered once;
- how people type commands here (:func:`surface`: ``/chatloop approve v3``, the
  core's table in Slack's syntax) and who they are for roles (:func:`person`: user
  groups as ``slack-group:<id>`` principals).

It knows nothing of the core's storage, of slack-bolt or of the Web API.
"""

from __future__ import annotations

import html
import re
from typing import Literal

from bot.core.commands import Surface, split
from bot.core.events import (
    CommandEvent,
    FlagEvent,
    MessageEvent,
    Person,
    Place,
    ReplyRef,
    VoteEvent,
)
from bot.platforms.slack.payloads import MessagePayload, ReactionPayload

PLATFORM = "slack"

UP_REACTIONS = frozenset({"+1", "thumbsup"})
DOWN_REACTIONS = frozenset({"-1", "thumbsdown"})
ANSWERED_SUBTYPES = frozenset({"thread_broadcast", "file_share"})
"""Message subtypes that are still a person writing; every other subtype is ignored."""

GROUP_PRINCIPAL = "slack-group"
"""Roles name a Slack user group as ``slack-group:<user group id>``."""

HELP_INTRO = (
    "chatloop answers when you mention it in a channel (it replies in a thread and "
    "follows up there) and in direct messages.\n"
    "• Rate an answer with its 👍 / 👎 buttons or reactions.\n"
    "• Support staff: on an answer, ⋯ → “Flag and correct”."
)

MessageKind = Literal["mention", "dm", "thread_reply", "ignore"]

_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def is_dm_channel(channel: str, channel_type: str = "") -> bool:
    return channel_type == "im" or (not channel_type and channel.startswith("D"))


def message_kind(
    msg: MessagePayload, *, event_type: str, bot_user_id: str, bot_id: str = ""
) -> MessageKind:
    """What a ``message``/``app_mention`` event is for the bot (before thread membership)."""
    subtype = msg.get("subtype")
    if subtype and subtype not in ANSWERED_SUBTYPES:
        return "ignore"  # edits, deletions, joins, bot_message, ...
    user = msg.get("user", "")
    if not user or msg.get("bot_id") or user == bot_user_id:
        return "ignore"  # other bots and the bot itself
    if bot_id and msg.get("bot_id") == bot_id:
        return "ignore"
    if not msg.get("channel") or not msg.get("ts"):
        return "ignore"
    channel = msg.get("channel", "")
    dm = is_dm_channel(channel, msg.get("channel_type", ""))
    if event_type == "app_mention":
        return "mention"
    if dm:
        return "dm"
    if bot_user_id and f"<@{bot_user_id}" in msg.get("text", ""):
        return "ignore"  # the app_mention event for the same message answers it
    thread_ts = msg.get("thread_ts")
    if thread_ts and thread_ts != msg.get("ts"):
        return "thread_reply"
    return "ignore"


def place_of(msg: MessagePayload, *, team_id: str) -> Place:
    """The conversation a message belongs to (and where the reply goes)."""
    channel = msg.get("channel", "")
    thread_ts = msg.get("thread_ts", "")
    if is_dm_channel(channel, msg.get("channel_type", "")):
        return Place(
            platform=PLATFORM,
            channel_id=channel,
            kind="dm",
            thread_id=thread_ts,
            workspace_id=team_id,
        )
    return Place(
        platform=PLATFORM,
        channel_id=channel,
        kind="thread",
        thread_id=thread_ts or msg.get("ts", ""),
        workspace_id=team_id,
    )


def place_in(channel: str, *, thread_ts: str = "", team_id: str = "") -> Place:
    """A place from a channel id and an optional thread (interactions, reactions)."""
    kind: Literal["dm", "thread", "channel"] = (
        "dm" if is_dm_channel(channel) else ("thread" if thread_ts else "channel")
    )
    return Place(
        platform=PLATFORM, channel_id=channel, kind=kind, thread_id=thread_ts, workspace_id=team_id
    )


def plain_text(text: str, *, bot_user_id: str = "") -> str:
    """Slack mrkdwn as the plain text a person meant.

    ``<@BOT>`` is dropped, ``<@U1>`` becomes ``@U1``, ``<#C1|general>`` ``#general``,
    ``<!here>`` ``@here``, ``<https://x|label>`` ``label (https://x)``; then
    ``&amp;``/``&lt;``/``&gt;`` are decoded.
    """

    def link(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@"):
            if bot_user_id and target[1:] == bot_user_id:
                return ""
            return f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!"):
            name = target[1:].split("^", 1)[0]
            return f"@{label or name}"
        if label and label != target:
            return f"{label} ({target})"
        return target

    text = _LINK.sub(link, text)
    return html.unescape(text).strip()


def message_key(channel: str, ts: str) -> str:
    """The idempotency key of a person's message.

    A message's ``(channel, ts)`` is the same in a retried delivery and in the
    ``app_mention`` and ``message`` events Slack sends for one mention in a thread,
    so each message is answered exactly once whichever event arrives first.
    """
    return f"msg:{channel}:{ts}"


def message_event(
    msg: MessagePayload, *, team_id: str, bot_user_id: str, author: Person
) -> MessageEvent:
    channel, ts = msg.get("channel", ""), msg.get("ts", "")
    return MessageEvent(
        place=place_of(msg, team_id=team_id),
        author=author,
        text=plain_text(msg.get("text", ""), bot_user_id=bot_user_id),
        event_id=message_key(channel, ts),
        platform_message_id=ts,
    )


def reaction_value(name: str, *, added: bool) -> int | None:
    """+1 / -1 for a thumbs reaction (any skin tone), 0 when removed; None otherwise."""
    base = name.split("::", 1)[0]
    if base in UP_REACTIONS:
        return 1 if added else 0
    if base in DOWN_REACTIONS:
        return -1 if added else 0
    return None


def reaction_vote(
    event: ReactionPayload, *, added: bool, event_id: str, team_id: str, voter: Person
) -> VoteEvent | None:
    """A vote from a 👍/👎 reaction on a message (the core checks it is a reply)."""
    item = event.get("item") or {}
    if item.get("type") != "message" or not item.get("ts") or not item.get("channel"):
        return None
    value = reaction_value(event.get("reaction", ""), added=added)
    if value is None:
        return None
    return VoteEvent(
        ref=ReplyRef(
            place=place_in(item.get("channel", ""), team_id=team_id),
            platform_message_id=item.get("ts", ""),
        ),
        voter=voter,
        value=value,
        source="reaction",
        event_id=event_id,
    )


def button_vote(
    *,
    reply_id: int,
    value: int,
    place: Place,
    voter: Person,
    event_id: str,
    reason: str | None = None,
) -> VoteEvent:
    return VoteEvent(
        ref=ReplyRef(place=place, reply_id=reply_id),
        voter=voter,
        value=value,
        source="button",
        reason=reason or None,
        event_id=event_id,
    )


def flag_event(
    *,
    place: Place,
    reply_id: int | None,
    message_ts: str,
    flagger: Person,
    reason: str,
    correction: str,
    event_id: str,
) -> FlagEvent:
    ref = (
        ReplyRef(place=place, reply_id=reply_id)
        if reply_id is not None
        else ReplyRef(place=place, platform_message_id=message_ts)
    )
    return FlagEvent(
        ref=ref,
        flagger=flagger,
        reason=reason or None,
        correction=correction or None,
        event_id=event_id,
    )


def surface(command: str = "/chatloop") -> Surface:
    """The core's commands as typed after the app's slash command: ``/chatloop approve v3``.

    Answers carry 👍/👎 and the "Flag and correct" shortcut, so ``up``/``down``/``flag``
    are not sub-commands here.
    """
    return Surface(prefix=f"{command} ", reply_controls=True, intro=HELP_INTRO, code="`")


def person(user_id: str, name: str = "", group_ids: tuple[str, ...] = ()) -> Person:
    """A core :class:`Person`; ``groups`` are ``slack-group:<id>`` principals."""
    groups = tuple(f"{GROUP_PRINCIPAL}:{g}" for g in group_ids)
    return Person(user_id=user_id, display_name=name, groups=groups)


def split_command(text: str) -> tuple[str, tuple[str, ...]]:
    """``"reject v3 too chatty"`` -> ``("reject", ("v3", "too chatty"))``, by the core's table."""
    return split(plain_text(text))


def command_event(
    *,
    name: str,
    args: tuple[str, ...],
    place: Place,
    author: Person,
    event_id: str,
    syntax: Surface,
) -> CommandEvent:
    return CommandEvent(
        place=place, author=author, name=name, args=args, event_id=event_id, surface=syntax
    )
