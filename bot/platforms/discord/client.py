"""discord.py's client as the adapter runs it, and the loggers it keeps quiet.

:class:`GatewayClient` is a :class:`discord.Client` whose event hooks hand every
gateway event to the adapter (``client.chatloop``, also how the buttons, forms and
slash commands find it) as a tracked, guarded task; it registers the persistent
buttons at setup and logs a failing hook without the event's content.

Logging: discord.py logs full gateway payloads (``discord.gateway``) and REST
request and response bodies (``discord.http``) at DEBUG, and interaction webhook
URLs, which carry the interaction token (``discord.webhook``).
:func:`quiet_wire_loggers` keeps those loggers at INFO or above whatever the root
level is, so message text never reaches a log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import discord

from bot.platforms.discord.commands import CommandTree
from bot.platforms.discord.ui import ApprovalButton, VoteButton

log = logging.getLogger(__name__)

PAYLOAD_LOGGERS = ("discord.gateway", "discord.http", "discord.webhook")
"""discord.py loggers whose DEBUG records carry payloads, bodies or interaction tokens."""


def quiet_wire_loggers() -> None:
    """Hold discord.py's payload loggers at INFO or above (never DEBUG)."""
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (inherit) included
            logger.setLevel(logging.INFO)


class GatewayClient(discord.Client):
    """discord.py's client with our event handlers; every handler defers to the adapter."""

    def __init__(self, adapter: Any, **options: Any) -> None:
        super().__init__(**options)
        self.chatloop = adapter  # read by ui.handler_of and commands.runner_of
        self.tree = CommandTree(self)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(VoteButton, ApprovalButton)

    async def on_ready(self) -> None:
        await self.chatloop._on_ready()

    async def on_resumed(self) -> None:
        log.info("discord gateway session resumed")

    async def on_message(self, message: discord.Message) -> None:
        await self.chatloop._guarded(self.chatloop._on_message(message), "message")

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.chatloop._guarded(self.chatloop._on_reaction(payload, added=True), "reaction")

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.chatloop._guarded(self.chatloop._on_reaction(payload, added=False), "reaction")

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        # the default prints nothing of the event, and neither do we: no message text
        # discord.py calls this inside its ``except`` block: sys.exc_info() is the error
        log.error(
            "discord event handler failed", exc_info=sys.exc_info(), extra={"event": event_method}
        )
