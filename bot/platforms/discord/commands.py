"""Discord's application commands, generated from the core's command table.

Every command of :data:`bot.core.commands.COMMANDS` that Discord offers becomes a
top-level slash command whose options are the command's arguments, typed
(``/approve version:v3``, ``/canary version:v3 percent:5``); a command with
sub-commands becomes a group (``/memory add question:… answer:…``). ``up``,
``down`` and ``flag`` are not commands here: answers carry 👍/👎 buttons, and staff
use the "Flag and correct" message command (a context menu) added beside them.
:data:`SURFACE` is this syntax for the core's help, usage errors and refusals.

Maintainer commands carry ``default_permissions`` (Manage Server): Discord shows
them only to members with that permission until a server admin changes it under
*Server Settings → Integrations*. That is a hint for the client, not a check: the
core still refuses anyone who is not a maintainer in ``CHATLOOP_MAINTAINERS``.
Staff commands (``/memory``, "Flag and correct") stay visible; staff are whatever
roles the settings name.

Registering the commands with Discord is an explicit step, :func:`sync_commands`
(``chatloop discord sync``), run once per release: not on every READY of every
replica, which would spend Discord's command-update rate limit and race between
replicas. The tree the adapter serves is built by the same :func:`install`.

What a command does is the adapter's (a :class:`CommandRunner`, found on the
client like :func:`bot.platforms.discord.ui.handler_of`); this module only
declares.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import discord
from discord import app_commands

from bot.core.commands import COMMANDS, Arg, Command, Surface
from bot.platforms.discord.errors import CommandSyncError
from storage.models import Role

log = logging.getLogger(__name__)

HELP_INTRO = (
    "Mention me in a channel (I answer in a thread and follow up there) or send me a DM.\n"
    "• Rate an answer with its 👍 / 👎 buttons or reactions.\n"
    "• Support staff: right-click an answer → Apps → “Flag and correct”."
)

SURFACE = Surface(prefix="/", named=True, reply_controls=True, intro=HELP_INTRO, code="`")
"""Discord's syntax: ``/reject version:<version> [reason:<reason>]``."""

FLAG_MENU = "Flag and correct"
MAINTAINER_PERMISSIONS = discord.Permissions(manage_guild=True)
"""The default permission of maintainer commands (a hint to Discord, not a check)."""


class CommandTree(app_commands.CommandTree[Any]):
    """discord.py's command tree; a failing command is logged (never its text) and
    answered "something went wrong" privately."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /
    ) -> None:
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error(
            "discord app command failed",
            exc_info=error,
            extra={"command": command, "interaction_id": interaction.id},
        )
        with contextlib.suppress(discord.HTTPException):
            if not interaction.response.is_done():
                await interaction.response.send_message(
                    "Sorry, something went wrong on my side.", ephemeral=True
                )


@runtime_checkable
class CommandRunner(Protocol):
    """What the adapter does with a slash command or the flag menu."""

    async def run_command(
        self, interaction: discord.Interaction, name: str, args: tuple[str, ...]
    ) -> object: ...

    async def flag_menu(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None: ...


def runner_of(interaction: discord.Interaction) -> CommandRunner:
    runner = getattr(interaction.client, "chatloop", None)
    if not isinstance(runner, CommandRunner):
        raise RuntimeError("the Discord client has no chatloop command runner attached")
    return runner


def _annotation(arg: Arg) -> Any:
    kind: Any = str
    if arg.kind in ("integer", "number"):
        base = int if arg.kind == "integer" else float
        if arg.minimum is None and arg.maximum is None:
            kind = base
        else:
            lo = None if arg.minimum is None else base(arg.minimum)
            hi = None if arg.maximum is None else base(arg.maximum)
            kind = app_commands.Range[base, lo, hi]
    return kind | None if arg.optional else kind


def _value(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _command(command: Command) -> app_commands.Command[Any, Any, None]:
    """One table command as an app command whose options are its arguments."""
    path = tuple(command.name.split(" "))

    async def callback(interaction: discord.Interaction[Any], /, **values: object) -> None:
        args = tuple(_value(values[a.name]) for a in command.args if values.get(a.name) is not None)
        await runner_of(interaction).run_command(interaction, path[0], (*path[1:], *args))

    params = [
        inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
        ),
        *(
            inspect.Parameter(
                a.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None if a.optional else inspect.Parameter.empty,
                annotation=_annotation(a),
            )
            for a in command.args
        ),
    ]
    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    if command.args:
        app_commands.describe(**{a.name: a.help[:100] for a in command.args})(callback)
    if command.role is Role.MAINTAINER:
        app_commands.default_permissions(MAINTAINER_PERMISSIONS)(callback)
    return app_commands.Command(
        name=command.word, description=command.help[:100], callback=callback
    )


def app_commands_of(
    commands: Iterable[Command] = COMMANDS,
) -> list[app_commands.Command[Any, Any, None] | app_commands.Group]:
    """The table's commands Discord offers, as app commands and groups."""
    out: list[app_commands.Command[Any, Any, None] | app_commands.Group] = []
    for command in commands:
        if not SURFACE.offers(command):
            continue
        if not command.subcommands:
            out.append(_command(command))
            continue
        group = app_commands.Group(
            name=command.name,
            description=command.help[:100],
            default_permissions=MAINTAINER_PERMISSIONS if command.role is Role.MAINTAINER else None,
        )
        for sub in command.subcommands:
            group.add_command(_command(sub))
        out.append(group)
    return out


async def _flag_and_correct(interaction: discord.Interaction, message: discord.Message) -> None:
    await runner_of(interaction).flag_menu(interaction, message)


def install(tree: app_commands.CommandTree[Any]) -> None:
    """Put every command (and the "Flag and correct" message command) on ``tree``."""
    for command in app_commands_of():
        tree.add_command(command)
    tree.add_command(app_commands.ContextMenu(name=FLAG_MENU, callback=_flag_and_correct))


async def sync_commands(*, token: str, guild_ids: Iterable[int | str] = ()) -> list[str]:
    """Register the commands with Discord: per guild when ``guild_ids`` (visible at
    once), else globally. Logs in over REST only (no gateway). Returns the names."""
    wanted = discord.Intents.none()
    wanted.guilds = True  # never connects; only so discord.py does not warn
    client = discord.Client(intents=wanted)
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    install(tree)
    guilds = sorted({int(g) for g in guild_ids if str(g).strip()})
    try:
        await client.login(token)
        synced: list[app_commands.AppCommand] = []
        if guilds:
            for guild_id in guilds:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
        else:
            synced = await tree.sync()
    except discord.LoginFailure:
        raise CommandSyncError("Discord rejected the bot token") from None
    except (discord.HTTPException, OSError) as exc:
        raise CommandSyncError(f"cannot register the commands with Discord: {exc}") from exc
    finally:
        await client.close()
    return sorted(c.name for c in synced)
