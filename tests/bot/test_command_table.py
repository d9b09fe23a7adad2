"""The one command table, rendered by every surface (terminal, Slack, Discord).

The core answers usage errors, help, unknown commands and refusals in the syntax of
the surface a command came from; the surfaces only pass their syntax. Runs the real
core on SQLite and PostgreSQL with a scripted generator.
"""

from __future__ import annotations

import discord
import pytest
from discord import app_commands
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bot.core import CommandEvent, Core, CoreConfig, Outcome, Person, Place, RolePolicy
from bot.core.commands import COMMANDS, TERMINAL, Command, Surface, bind, split
from bot.core.handler import _HANDLERS
from bot.platforms.discord import commands as discord_commands
from bot.platforms.discord.translate import intents
from bot.platforms.slack import translate as slack
from storage.models import Role
from tests.bot.fakes import ScriptedGenerator
from tests.conftest import run

SLACK = slack.surface("/chatloop")
DISCORD = discord_commands.SURFACE
SURFACES = {"terminal": TERMINAL, "slack": SLACK, "discord": DISCORD}

PLACE = Place(platform="test", channel_id="C1", thread_id="t1", kind="thread", workspace_id="W1")
CUSTOMER = Person(user_id="ann")
STAFF = Person(user_id="sam", groups=("test-group:support",))
MAINTAINER = Person(user_id="max")


def make_core(sessions: sessionmaker[Session]) -> Core:
    return Core(
        generator=ScriptedGenerator(),
        sessions=sessions,
        roles=RolePolicy(staff=["test-group:support"], maintainers=["test:max"]),
        config=CoreConfig(system_prompt="Be brief."),
    )


def command(
    core: Core, surface: Surface, name: str, *args: str, who: Person = MAINTAINER
) -> Outcome:
    event = CommandEvent(place=PLACE, author=who, name=name, args=args, surface=surface)
    return run(core.on_command(event))  # type: ignore[no-any-return]


def offered(surface: Surface) -> list[Command]:
    return [c for c in COMMANDS.walk() if surface.offers(c) and not c.subcommands]


def needs_an_argument(c: Command) -> bool:
    return any(not a.optional for a in c.args)


# -- rendering --------------------------------------------------------------------------------
def test_each_surface_writes_a_command_in_its_own_syntax() -> None:
    reject = COMMANDS.get("reject")
    add = COMMANDS.get("memory add")
    assert reject is not None and add is not None
    assert TERMINAL.usage(reject) == "/reject <version> [reason]"
    assert SLACK.usage(reject) == "/chatloop reject <version> [reason]"
    assert DISCORD.usage(reject) == "/reject version:<version> [reason:<reason>]"
    assert TERMINAL.usage(add) == "/memory add <question> | <answer>"
    assert SLACK.usage(add) == "/chatloop memory add <question> | <answer>"
    assert DISCORD.usage(add) == "/memory add question:<question> answer:<answer>"
    listing = COMMANDS.get("memory list")
    assert listing is not None  # "… more: <this>" under a long memory listing
    assert TERMINAL.call(listing, "2") == "/memory list 2"
    assert SLACK.call(listing, "2") == "/chatloop memory list 2"
    assert DISCORD.call(listing, "2") == "/memory list page:2"
    assert TERMINAL.call(add, "Q?", "A.") == "/memory add Q? | A."


@pytest.mark.parametrize("surface_name", sorted(SURFACES))
def test_help_lists_every_command_the_surface_offers(surface_name: str) -> None:
    surface = SURFACES[surface_name]
    text = surface.help()
    for c in offered(surface):
        assert surface.usage(c) in text, c.name
    # answers carry buttons on Slack and Discord: no /up there, and the intro says so
    assert ("/up" in text) is (surface is TERMINAL)
    if surface is not TERMINAL:
        assert "👍" in text and "Flag and correct" in text


def test_every_command_has_a_handler_in_the_core() -> None:
    special = {"help", "memory", "up", "down", "flag"}
    keys = {c.key for c in COMMANDS.walk()}
    assert keys == special | set(_HANDLERS)


def test_slack_manifest_hints_every_command_slack_offers() -> None:
    yaml = pytest.importorskip("yaml")
    from pathlib import Path

    import bot.platforms.slack as package

    manifest = yaml.safe_load((Path(package.__file__).parent / "manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    hints = {h.strip().split(" ")[0] for h in command["usage_hint"].split("|")}
    assert hints == {c.name for c in COMMANDS if SLACK.offers(c)}
    for c in COMMANDS.walk():  # each hinted usage is the table's, without the prefix
        usage = SLACK.usage(c).removeprefix(SLACK.prefix)
        if SLACK.offers(c) and not c.subcommands and " " not in c.name:
            assert usage in command["usage_hint"], usage


# -- usage errors, unknown commands and refusals, answered by the core ---------------------------
@pytest.mark.parametrize("surface_name", sorted(SURFACES))
def test_usage_errors_speak_the_surface_syntax(
    sessions: sessionmaker[Session], surface_name: str
) -> None:
    surface = SURFACES[surface_name]
    core = make_core(sessions)
    checked = 0
    for c in offered(surface):
        if not needs_an_argument(c):
            continue
        name, *sub = c.name.split(" ")
        outcome = command(core, surface, name, *sub)
        assert not outcome.ok, c.name
        assert outcome.text == f"Usage: {surface.usage(c)}", c.name
        checked += 1
    assert checked >= 7  # approve, reject, canary and the memory sub-commands at least


def test_the_issue_example_on_every_surface(sessions: sessionmaker[Session]) -> None:
    core = make_core(sessions)
    expected = {
        "terminal": "Usage: /approve <version>",
        "slack": "Usage: /chatloop approve <version>",
        "discord": "Usage: /approve version:<version>",
    }
    for name, surface in SURFACES.items():
        assert command(core, surface, "approve").text == expected[name]
    # what a Slack user types goes through the same table
    name, args = slack.split_command("approve")
    assert command(core, SLACK, name, *args).text == "Usage: /chatloop approve <version>"


@pytest.mark.parametrize("surface_name", sorted(SURFACES))
def test_unknown_commands_are_answered_by_the_core(
    sessions: sessionmaker[Session], surface_name: str
) -> None:
    surface = SURFACES[surface_name]
    core = make_core(sessions)
    unknown = command(core, surface, "frobnicate", who=CUSTOMER)
    help_command = COMMANDS.get("help")
    assert help_command is not None and not unknown.ok
    assert unknown.text == (
        f"Unknown command {surface.prefix}frobnicate. "
        f"Type {surface.invocation(help_command)} for the list."
    )
    assert command(core, surface, "", who=CUSTOMER).text == surface.help()
    # a command judging the last answer is not a command where answers carry buttons
    up = command(core, surface, "up", who=CUSTOMER)
    if surface is TERMINAL:
        assert "ask me something first" in up.text
    else:
        assert up.text == surface.unknown("up")


@pytest.mark.parametrize("surface_name", sorted(SURFACES))
def test_roles_are_checked_by_the_core(sessions: sessionmaker[Session], surface_name: str) -> None:
    surface = SURFACES[surface_name]
    core = make_core(sessions)
    maintainer_only = [c for c in COMMANDS if c.role is Role.MAINTAINER]
    assert {c.name for c in maintainer_only} == {
        "status",
        "adapters",
        "approve",
        "reject",
        "rollback",
        "canary",
    }
    for c in maintainer_only:
        for who in (CUSTOMER, STAFF):  # staff through a group principal are still refused
            refused = command(core, surface, c.name, "v1", who=who)
            assert not refused.ok
            assert refused.text == f"Only maintainers can use {surface.invocation(c)}.", c.name
    memory = command(core, surface, "memory", "list", who=CUSTOMER)
    assert memory.text == f"Only support staff and maintainers can use {surface.prefix}memory."
    assert command(core, surface, "memory", "list", who=STAFF).ok
    assert "serving: " in command(core, surface, "status").text
    flag = core.permitted("flag", PLACE, CUSTOMER)
    assert not flag.ok and flag.text == "Only support staff can flag and correct answers."
    assert core.permitted("flag", PLACE, STAFF).ok


# -- typed text -> arguments ----------------------------------------------------------------------
def test_split_and_bind() -> None:
    assert split('reject v3 "too chatty"') == ("reject", ("v3", "too chatty"))
    assert split('/flag Click "Export",  then  CSV') == ("flag", ('Click "Export",  then  CSV',))
    assert split("  ") == ("help", ())
    assert split("MEMORY add Do you ship? | Yes.") == ("memory", ("add", "Do you ship? | Yes."))
    assert split("canary v2 5%") == ("canary", ("v2", "5%"))
    reject, canary, add = (COMMANDS.get(n) for n in ("reject", "canary", "memory add"))
    assert reject is not None and canary is not None and add is not None
    assert bind(reject, ("v3", "too", "chatty")) == ("v3", "too chatty")  # words, as typed
    assert bind(reject, ("v3", "too chatty")) == ("v3", "too chatty")  # option values
    assert bind(reject, ("v3",)) == ("v3",)
    assert bind(reject, ()) is None
    assert bind(canary, ("v2",)) is None and bind(canary, ("v2", "5", "x")) is None
    assert bind(add, ("Do", "you", "ship?", "|", "Yes.")) == ("Do you ship?", "Yes.")
    assert bind(add, ("Do", "you", "ship?", "Yes.")) is None  # no separator
    values = ("Do you ship?", "Yes, | really.")  # Discord's options, one per argument
    assert bind(add, values, by_name=True) == values
    assert bind(add, ("Do you ship?",), by_name=True) is None
    assert bind(reject, ("v3", "too chatty", "x"), by_name=True) is None
    assert bind(add, ("Do you ship?", "|", "Yes | really.")) == ("Do you ship?", "Yes | really.")


# -- Discord -------------------------------------------------------------------------------------
def test_discord_commands_are_generated_from_the_table() -> None:
    client = discord.Client(intents=discord.Intents.none())
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    discord_commands.install(tree)
    generated = {c.name: c.to_dict(tree) for c in tree.get_commands()}
    manage_guild = discord.Permissions(manage_guild=True).value
    for c in COMMANDS:
        if not DISCORD.offers(c):
            assert c.name not in generated  # up, down, flag: buttons and the message menu
            continue
        payload = generated.pop(c.name)
        perms = payload.get("default_member_permissions")
        if c.role is Role.MAINTAINER:
            assert perms is not None and int(perms) == manage_guild, c.name
        else:
            assert perms is None, c.name
        options = {o["name"]: o for o in payload.get("options", [])}
        if c.subcommands:
            assert set(options) == {s.word for s in c.subcommands}
            continue
        assert list(options) == [a.name for a in c.args], c.name
        for a in c.args:
            assert bool(options[a.name].get("required")) is not a.optional, (c.name, a.name)
    assert set(generated) == {"Flag and correct"}
    canary = next(c for c in tree.get_commands() if c.name == "canary").to_dict(tree)
    percent = next(o for o in canary["options"] if o["name"] == "percent")
    assert (percent["type"], percent["min_value"], percent["max_value"]) == (10, 0.0, 100.0)


def test_discord_message_content_intent_only_when_listening_in_channels() -> None:
    assert intents(listen_in_channels=True).message_content
    quiet = intents(listen_in_channels=False)
    assert not quiet.message_content
    assert quiet.guild_messages and quiet.dm_messages and quiet.guild_reactions


def test_discord_sync_without_a_token_exits_non_zero_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from chatloop.cli import app

    monkeypatch.delenv("CHATLOOP_DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    result = CliRunner().invoke(app, ["discord", "sync"])
    assert result.exit_code == 1
    assert "CHATLOOP_DISCORD_TOKEN" in result.stderr
