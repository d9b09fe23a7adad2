"""The platform-neutral core of the bot.

It takes events (who, where, what), keeps thread context, asks a generation
backend for a streamed reply, and records messages, replies, votes and flags. It
knows nothing of Slack or Discord payloads: platform adapters hand it frozen
:mod:`bot.core.events` and a :class:`~bot.core.events.ReplySink` to write to.
"""

from bot.core.events import (
    CommandEvent,
    FlagEvent,
    MessageEvent,
    Outcome,
    Person,
    Place,
    ReplySink,
    VoteEvent,
)
from bot.core.handler import Core, CoreConfig
from bot.core.roles import RolePolicy

__all__ = [
    "CommandEvent",
    "Core",
    "CoreConfig",
    "FlagEvent",
    "MessageEvent",
    "Outcome",
    "Person",
    "Place",
    "ReplySink",
    "RolePolicy",
    "VoteEvent",
]
