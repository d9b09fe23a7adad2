"""Discord UI pieces: persistent 👍/👎 and Approve/Reject buttons, and the modals.

Buttons are :class:`discord.ui.DynamicItem` s: the state lives in the ``custom_id``
(``chatloop:vote:up:<reply id>``, ``chatloop:approve:<version>``), and the client
registers the classes once with ``add_dynamic_items``, so a button posted before a
restart still works after it — no per-message ``add_view`` and no message cache.

Modals (the 👎 reason, "Flag and correct") are ordinary :class:`discord.ui.Modal` s
kept in memory while open (15 minutes); a modal opened before a restart cannot be
submitted after it (Discord then shows "interaction failed"; the 👎 vote itself
was already recorded when the button was clicked). discord.py finds an open modal by
its ``custom_id`` alone, so each modal also checks that the person submitting it is
the one it was opened for; anyone else is refused (privately) and the form stays open
for its owner. What a submission may do is still decided by the core (roles).

Interactions are answered privately with :func:`say` (cut to one message by
:func:`clip`).

This module knows the layout and the ``custom_id`` grammar. What a click *means* is
decided by the :class:`ComponentHandler` (the adapter), which turns it into a core
event; nothing here talks to the core.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable
from typing import Any, Literal, Protocol, runtime_checkable

import discord

from bot.platforms.discord.split import MESSAGE_LIMIT

log = logging.getLogger(__name__)

THUMBS_UP = "\N{THUMBS UP SIGN}"
THUMBS_DOWN = "\N{THUMBS DOWN SIGN}"
VOTE_ID = re.compile(r"chatloop:vote:(?P<direction>up|down):(?P<reply_id>[0-9]{1,19})")
APPROVAL_ID = re.compile(r"chatloop:(?P<action>approve|reject):(?P<version>\S{1,80})")
MAX_VERSION_CHARS = 80
MODAL_TIMEOUT_S = 15 * 60

Action = Literal["approve", "reject"]


def vote_custom_id(direction: Literal["up", "down"], reply_id: int) -> str:
    return f"chatloop:vote:{direction}:{reply_id}"


def approval_custom_id(action: Action, version: str) -> str:
    if not version or len(version) > MAX_VERSION_CHARS or any(c.isspace() for c in version):
        raise ValueError(f"adapter version {version!r} cannot be put in a button")
    return f"chatloop:{action}:{version}"


def reply_id_from_components(components: Iterable[Any]) -> int | None:
    """The reply id encoded in a message's 👍/👎 buttons (``None`` if it has none)."""
    for row in components:
        for child in getattr(row, "children", [row]):
            m = VOTE_ID.fullmatch(getattr(child, "custom_id", None) or "")
            if m:
                return int(m.group("reply_id"))
    return None


@runtime_checkable
class ComponentHandler(Protocol):
    """What the adapter does with a click or a modal submit."""

    async def on_vote_button(
        self, interaction: discord.Interaction, *, reply_id: int, value: int
    ) -> None: ...

    async def on_vote_reason(
        self, interaction: discord.Interaction, *, reply_id: int, reason: str
    ) -> None: ...

    async def on_flag_submit(
        self, interaction: discord.Interaction, *, reply_id: int, reason: str, correction: str
    ) -> None: ...

    async def on_approval_button(
        self, interaction: discord.Interaction, *, action: Action, version: str
    ) -> None: ...


def handler_of(interaction: discord.Interaction) -> ComponentHandler:
    handler = getattr(interaction.client, "chatloop", None)
    if not isinstance(handler, ComponentHandler):
        raise RuntimeError("the Discord client has no chatloop handler attached")
    return handler


class VoteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=VOTE_ID):
    """👍 or 👎 under a reply; the reply id is in the ``custom_id``."""

    def __init__(self, direction: Literal["up", "down"], reply_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary,
                emoji=THUMBS_UP if direction == "up" else THUMBS_DOWN,
                custom_id=vote_custom_id(direction, reply_id),
            )
        )
        self.direction: Literal["up", "down"] = direction
        self.reply_id = reply_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> VoteButton:
        direction: Literal["up", "down"] = "up" if match.group("direction") == "up" else "down"
        return cls(direction, int(match.group("reply_id")))

    async def callback(self, interaction: discord.Interaction) -> None:
        value = 1 if self.direction == "up" else -1
        await handler_of(interaction).on_vote_button(
            interaction, reply_id=self.reply_id, value=value
        )


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=APPROVAL_ID):
    """Approve / Reject under an approval request; the version is in the ``custom_id``."""

    def __init__(self, action: Action, version: str) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.success
                if action == "approve"
                else discord.ButtonStyle.danger,
                label="Approve" if action == "approve" else "Reject",
                custom_id=approval_custom_id(action, version),
            )
        )
        self.action: Action = action
        self.version = version

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ApprovalButton:
        action: Action = "approve" if match.group("action") == "approve" else "reject"
        return cls(action, match.group("version"))

    async def callback(self, interaction: discord.Interaction) -> None:
        await handler_of(interaction).on_approval_button(
            interaction, action=self.action, version=self.version
        )


def _modal_id(kind: str, reply_id: int) -> str:
    # unique per opening: discord.py keys open modals by custom_id alone
    return f"chatloop:{kind}:{reply_id}:{secrets.token_hex(6)}"


NOT_YOUR_FORM = "This form was opened by someone else."


async def _opened_by(interaction: discord.Interaction, opener_id: int) -> bool:
    """Whether the submitter opened the form; refuses (ephemerally) anyone else."""
    if interaction.user.id == opener_id:
        return True
    if not interaction.response.is_done():
        await interaction.response.send_message(NOT_YOUR_FORM, ephemeral=True)
    return False


def feedback_view(reply_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton("up", reply_id))
    view.add_item(VoteButton("down", reply_id))
    return view


def approval_view(version: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ApprovalButton("approve", version))
    view.add_item(ApprovalButton("reject", version))
    return view


class ReasonModal(discord.ui.Modal, title="What was wrong with this answer?"):
    """Opened by 👎: an optional reason."""

    reason: discord.ui.TextInput[ReasonModal] = discord.ui.TextInput(
        label="Reason (optional)",
        style=discord.TextStyle.paragraph,
        required=False,
        max_length=1000,
        placeholder="e.g. outdated, wrong product, too vague",
    )

    def __init__(self, *, reply_id: int, opener_id: int) -> None:
        super().__init__(timeout=MODAL_TIMEOUT_S, custom_id=_modal_id("reason", reply_id))
        self.reply_id = reply_id
        self.opener_id = opener_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await _opened_by(interaction, self.opener_id)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await handler_of(interaction).on_vote_reason(
            interaction, reply_id=self.reply_id, reason=self.reason.value
        )


class FlagModal(discord.ui.Modal, title="Flag and correct"):
    """Staff: why the answer is wrong and what the right answer is."""

    reason: discord.ui.TextInput[FlagModal] = discord.ui.TextInput(
        label="What is wrong",
        style=discord.TextStyle.short,
        required=False,
        max_length=500,
    )
    correction: discord.ui.TextInput[FlagModal] = discord.ui.TextInput(
        label="The correct answer",
        style=discord.TextStyle.paragraph,
        required=True,
        max_length=4000,
    )

    def __init__(self, *, reply_id: int, opener_id: int) -> None:
        super().__init__(timeout=MODAL_TIMEOUT_S, custom_id=_modal_id("flag", reply_id))
        self.reply_id = reply_id
        self.opener_id = opener_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await _opened_by(interaction, self.opener_id)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await handler_of(interaction).on_flag_submit(
            interaction,
            reply_id=self.reply_id,
            reason=self.reason.value,
            correction=self.correction.value,
        )


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to one Discord message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def say(interaction: discord.Interaction, text: str) -> None:
    """Answer an interaction privately (ephemeral), first answer or follow-up; a failure
    is logged (ids and status, never the text), never raised."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(clip(text), ephemeral=True)
        else:
            await interaction.response.send_message(clip(text), ephemeral=True)
    except discord.HTTPException as exc:
        log.warning(
            "cannot answer an interaction",
            extra={"interaction_id": interaction.id, "status": exc.status, "code": exc.code},
        )
