"""Typed shapes of the raw Slack payloads the adapter reads (the edge of the system).

Only the fields chatloop uses are declared; Slack sends many more. Every field is
optional (``total=False``) because Slack omits fields freely, so readers use
``.get`` and the translators in :mod:`bot.platforms.slack.translate` decide what a
missing field means. Nothing here is seen by the core, which only gets
:mod:`bot.core.events`.

Sources: the Events API (``event_callback`` envelopes with ``message``,
``app_mention``, ``reaction_added``/``reaction_removed``), interactivity payloads
(``block_actions``, ``message_action`` shortcuts, ``view_submission``) and slash
commands (form-encoded, parsed by slack-bolt into a flat dict).

The interactivity payloads name their user, channel and team in the same nested
places; :func:`origin` reads them once for every handler, and :func:`view_metadata`
reads the JSON a modal carries in ``private_metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, cast


class MessagePayload(TypedDict, total=False):
    """``event`` of a ``message`` or ``app_mention`` event (also a shortcut's ``message``)."""

    type: str
    subtype: str
    channel: str
    channel_type: str  # "channel", "group", "im", "mpim" (absent on app_mention)
    user: str
    bot_id: str
    text: str
    ts: str
    thread_ts: str
    team: str
    blocks: list[dict[str, Any]]


class ReactionItem(TypedDict, total=False):
    type: str  # "message"
    channel: str
    ts: str


class ReactionPayload(TypedDict, total=False):
    """``event`` of ``reaction_added`` / ``reaction_removed``."""

    type: str
    user: str
    reaction: str
    item: ReactionItem
    item_user: str
    event_ts: str


class EventEnvelope(TypedDict, total=False):
    """The outer ``event_callback`` body of the Events API."""

    type: str
    team_id: str
    api_app_id: str
    event_id: str
    event_time: int
    event: dict[str, Any]


class User(TypedDict, total=False):
    id: str
    name: str
    username: str
    team_id: str


class Team(TypedDict, total=False):
    id: str
    domain: str


class Channel(TypedDict, total=False):
    id: str
    name: str


class Container(TypedDict, total=False):
    type: str  # "message" or "view"
    message_ts: str
    channel_id: str
    is_ephemeral: bool
    thread_ts: str


class Action(TypedDict, total=False):
    action_id: str
    block_id: str
    value: str
    action_ts: str
    type: str


class ViewState(TypedDict, total=False):
    values: dict[str, dict[str, dict[str, Any]]]


class View(TypedDict, total=False):
    id: str
    callback_id: str
    private_metadata: str
    state: ViewState
    hash: str


class BlockActionsPayload(TypedDict, total=False):
    """A button click (``type: block_actions``)."""

    type: str
    user: User
    team: Team
    channel: Channel
    container: Container
    message: MessagePayload
    trigger_id: str
    response_url: str
    actions: list[Action]


class MessageShortcutPayload(TypedDict, total=False):
    """A message shortcut (``type: message_action``)."""

    type: str
    callback_id: str
    trigger_id: str
    action_ts: str
    message_ts: str
    response_url: str
    user: User
    team: Team
    channel: Channel
    message: MessagePayload


class ViewSubmissionPayload(TypedDict, total=False):
    """A modal submitted (``type: view_submission``)."""

    type: str
    user: User
    team: Team
    view: View
    trigger_id: str


class SlashCommandPayload(TypedDict, total=False):
    """A slash command (form fields, flattened by slack-bolt)."""

    command: str
    text: str
    user_id: str
    user_name: str
    team_id: str
    channel_id: str
    channel_name: str
    response_url: str
    trigger_id: str


Interaction = BlockActionsPayload | MessageShortcutPayload | ViewSubmissionPayload


@dataclass(frozen=True, slots=True)
class Origin:
    """Who clicked or submitted, and where: read from an interactivity payload."""

    user_id: str
    user_name: str
    channel: str
    team_id: str


def origin(payload: Interaction, *, team_id: str = "") -> Origin:
    """The user, channel and team of a button click, shortcut or modal submission.

    The name is ``username`` (block actions) or ``name`` (shortcuts, views); the
    channel is ``channel.id``, else the ``container``'s (a message in a view has no
    ``channel``; a modal submission has neither: ""); the team falls back to
    ``team_id`` (the bot's workspace from slack-bolt's context).
    """
    raw = cast(Mapping[str, Any], payload)
    user = raw.get("user") or {}
    channel = (raw.get("channel") or {}).get("id") or (raw.get("container") or {}).get(
        "channel_id", ""
    )
    return Origin(
        user_id=str(user.get("id", "")),
        user_name=str(user.get("username") or user.get("name", "")),
        channel=str(channel),
        team_id=str((raw.get("team") or {}).get("id") or team_id),
    )


def view_metadata(payload: ViewSubmissionPayload) -> dict[str, Any]:
    """The JSON object a modal was opened with (``private_metadata``); {} if unreadable."""
    raw = (payload.get("view") or {}).get("private_metadata") or "{}"
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
