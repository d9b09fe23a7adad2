"""The Discord adapter (discord.py gateway client): ``DiscordAdapter``.

The package is ``bot.platforms.discord``; it imports the ``discord`` library
absolutely, so the two never shadow each other (never put this directory itself on
``sys.path``).
"""

import warnings

with warnings.catch_warnings():
    # discord.py imports the stdlib ``audioop`` (voice, which we do not use); on Python
    # 3.11/3.12 that import warns "deprecated", which ``-W error`` turns into a failure.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord  # noqa: F401

from bot.platforms.discord.adapter import DiscordAdapter
from bot.platforms.discord.errors import CommandSyncError, DiscordAdapterError
from bot.platforms.discord.translate import intents

__all__ = ["CommandSyncError", "DiscordAdapter", "DiscordAdapterError", "intents"]
