"""The Discord package's errors, one tree::

    DiscordAdapterError          the adapter cannot run (bad token, missing intent,
     │                           unreachable channel)
     └── CommandSyncError        the app commands could not be registered

discord.py's own errors (``LoginFailure``, ``HTTPException``, ``ConnectionClosed``)
are mapped to these at the boundary (``raise ... from exc``); an event's failure is
logged and never raised into the gateway loop.
"""

from __future__ import annotations


class DiscordAdapterError(Exception):
    """The adapter cannot run (bad token, missing intent, unreachable channel)."""


class CommandSyncError(DiscordAdapterError):
    """The commands could not be registered (bad token, Discord unreachable or refusing)."""
