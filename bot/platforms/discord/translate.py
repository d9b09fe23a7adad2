"""discord.py objects -> core values: pure functions, no I/O.

Decides what a Discord object *means* for chatloop, never what to do about it:

- which gateway intents the adapter asks for (:func:`intents`): the privileged
  Message Content intent only when the bot listens in channels (follow-ups in its
  threads without a mention); mentions of the bot and DMs carry their text
  without it;
- who someone is for roles (:func:`person_of`: member roles as
  ``discord-role:<id>`` principals);
- where a conversation lives (:func:`thread_place`, :func:`interaction_place`,
  :func:`reaction_place`): ``channel_id`` is the thread / DM / channel id,
  ``thread_id`` the thread id (the mention's message id for an answer in the
  channel, "" for DMs), ``workspace_id`` the guild id;
- the question in a message (:func:`question`: the bot's own mention dropped,
  other users as ``@name``) and whether it mentions the bot (:func:`mentions`);
- a reaction as a vote value (:func:`vote_value`), an interaction as the core event
  it carries (:func:`interaction_vote`, :func:`interaction_flag`,
  :func:`interaction_command`; the event id is ``interaction:<id>``), a message as a
  :class:`MessageEvent` (:func:`message_event`; the event id is the message id, so a
  MESSAGE_CREATE replayed after a RESUME, or seen by two replicas, is answered once);
- the allow-lists (:class:`Scope`): guilds and channels chatloop works in; a thread
  counts by its parent channel.

It knows nothing of the core's decisions, of the database or of the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import discord

from bot.core.commands import Surface
from bot.core.events import (
    CommandEvent,
    FlagEvent,
    MessageEvent,
    Person,
    Place,
    ReplyRef,
    VoteEvent,
)
from bot.platforms.discord.ui import THUMBS_DOWN, THUMBS_UP

PLATFORM = "discord"
GROUP_PRINCIPAL = "discord-role"
"""Roles name a Discord role as ``discord-role:<role id>``."""

ANSWERED_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
THREAD_TYPES = frozenset(
    {
        discord.ChannelType.public_thread,
        discord.ChannelType.private_thread,
        discord.ChannelType.news_thread,
    }
)


def intents(*, listen_in_channels: bool = True) -> discord.Intents:
    """The gateway intents the adapter needs, and no more.

    ``listen_in_channels``: answer follow-ups in the bot's threads without a mention,
    which needs the privileged Message Content intent; without it the bot answers
    mentions and DMs only (Discord sends their text to a bot anyway).
    """
    wanted = discord.Intents.none()
    wanted.guilds = True  # channels, threads, roles (for Person.groups)
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = listen_in_channels  # privileged
    wanted.guild_reactions = True
    wanted.dm_reactions = True
    return wanted


def person_of(user: discord.abc.User | discord.Member) -> Person:
    """A core :class:`Person`; ``groups`` are ``discord-role:<id>`` of the member's roles
    (not @everyone)."""
    groups: tuple[str, ...] = ()
    if isinstance(user, discord.Member):
        groups = tuple(f"{GROUP_PRINCIPAL}:{r.id}" for r in user.roles if not r.is_default())
    return Person(user_id=str(user.id), display_name=user.display_name, groups=groups)


def dm_place(channel_id: int | str) -> Place:
    return Place(platform=PLATFORM, channel_id=str(channel_id), kind="dm")


def thread_place(thread: discord.Thread) -> Place:
    return Place(
        platform=PLATFORM,
        channel_id=str(thread.id),
        thread_id=str(thread.id),
        kind="thread",
        workspace_id=str(thread.guild.id),
    )


def channel_place(channel_id: int | str, guild_id: int | str, thread_id: str = "") -> Place:
    """A guild channel (``thread_id``: the mention answered there, without a thread)."""
    return Place(
        platform=PLATFORM,
        channel_id=str(channel_id),
        thread_id=thread_id,
        kind="channel",
        workspace_id=str(guild_id),
    )


def interaction_place(interaction: discord.Interaction) -> Place:
    channel_id = str(interaction.channel_id or "")
    if interaction.guild_id is None:
        return dm_place(channel_id)
    channel = interaction.channel
    if channel is not None and getattr(channel, "type", None) in THREAD_TYPES:
        return Place(
            platform=PLATFORM,
            channel_id=channel_id,
            thread_id=channel_id,
            kind="thread",
            workspace_id=str(interaction.guild_id),
        )
    return channel_place(channel_id, interaction.guild_id)


def reaction_place(payload: discord.RawReactionActionEvent, channel: object) -> Place:
    """Where a reaction happened (``channel``: the cached channel, if any)."""
    if payload.guild_id is None:
        return dm_place(payload.channel_id)
    if isinstance(channel, discord.Thread):
        return thread_place(channel)
    return channel_place(payload.channel_id, payload.guild_id)


def reaction_voter(payload: discord.RawReactionActionEvent) -> Person:
    if payload.member is not None:
        return person_of(payload.member)
    return Person(user_id=str(payload.user_id))


def vote_value(emoji: discord.PartialEmoji) -> int | None:
    """+1 for 👍, -1 for 👎 (any skin tone); None for anything else or a custom emoji."""
    if emoji.id is not None:
        return None
    name = emoji.name or ""
    if name.startswith(THUMBS_UP):
        return 1
    if name.startswith(THUMBS_DOWN):
        return -1
    return None


def mentions(message: discord.Message, me: int) -> bool:
    """Whether ``message`` mentions the bot (user ``me``), directly or by its role."""
    if me in message.raw_mentions or any(u.id == me for u in message.mentions):
        return True
    return any(r.tags is not None and r.tags.bot_id == me for r in message.role_mentions)


def question(message: discord.Message, me: int) -> str:
    """The message text without the bot's own mention; other users as @name."""
    text = re.sub(rf"<@!?{me}>", "", message.content)
    for role in message.role_mentions:
        if role.tags is not None and role.tags.bot_id == me:
            text = text.replace(role.mention, "")
    for user in message.mentions:
        text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
    return text.strip()


def message_event(message: discord.Message, place: Place, me: int) -> MessageEvent:
    return MessageEvent(
        place=place,
        author=person_of(message.author),
        text=question(message, me),
        event_id=str(message.id),
        platform_message_id=str(message.id),
    )


def _interaction_ref(interaction: discord.Interaction, reply_id: int) -> ReplyRef:
    return ReplyRef(place=interaction_place(interaction), reply_id=reply_id)


def interaction_vote(
    interaction: discord.Interaction, *, reply_id: int, value: int, reason: str | None = None
) -> VoteEvent:
    """A 👍/👎 button (``reason``: from the 👎 form)."""
    return VoteEvent(
        ref=_interaction_ref(interaction, reply_id),
        voter=person_of(interaction.user),
        value=value,
        source="button",
        reason=(reason or "").strip() or None,
        event_id=f"interaction:{interaction.id}",
    )


def interaction_flag(
    interaction: discord.Interaction, *, reply_id: int, reason: str, correction: str
) -> FlagEvent:
    """A submitted "Flag and correct" form."""
    return FlagEvent(
        ref=_interaction_ref(interaction, reply_id),
        flagger=person_of(interaction.user),
        reason=reason.strip() or None,
        correction=correction.strip() or None,
        event_id=f"interaction:{interaction.id}",
    )


def interaction_command(
    interaction: discord.Interaction, name: str, args: tuple[str, ...], syntax: Surface
) -> CommandEvent:
    """A slash command or an approval button, as a command of the core's table."""
    return CommandEvent(
        place=interaction_place(interaction),
        author=person_of(interaction.user),
        name=name,
        args=args,
        event_id=f"interaction:{interaction.id}",
        surface=syntax,
    )


def _ids(values: Iterable[int | str]) -> frozenset[int]:
    return frozenset(int(v) for v in values if str(v).strip())


class Scope:
    """The allow-lists: the guilds and channels chatloop works in (empty: all).

    DMs are always in scope. The maintainers channel counts for interactions
    (approval buttons, commands) even when it is not listed.
    """

    def __init__(
        self,
        *,
        guild_ids: Iterable[int | str] = (),
        channel_ids: Iterable[int | str] = (),
        maintainers_channel: int | str = "",
    ) -> None:
        self.guild_ids = _ids(guild_ids)
        self.channel_ids = _ids(channel_ids)
        self.maintainers_channel = int(maintainers_channel) if str(maintainers_channel) else 0

    def guild(self, guild_id: int | None) -> bool:
        return guild_id is None or not self.guild_ids or guild_id in self.guild_ids

    def channel(
        self, channel_id: int, parent_id: int | None = None, *, maintainers: bool = False
    ) -> bool:
        """A channel, or a thread by its ``parent_id``; ``maintainers``: that channel too."""
        if not self.channel_ids:
            return True
        allowed = self.channel_ids | (
            {self.maintainers_channel} if maintainers and self.maintainers_channel else set()
        )
        return channel_id in allowed or parent_id in allowed
