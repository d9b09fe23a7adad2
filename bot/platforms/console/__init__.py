"""The terminal adapter: ``chatloop chat``."""

from bot.platforms.console.adapter import ConsoleAdapter

__all__ = ["ConsoleAdapter"]
