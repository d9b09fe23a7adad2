"""The command vocabulary: one table, rendered by every surface.

:data:`COMMANDS` is every command a person can give chatloop in a chat: its name,
its arguments (name, kind, optional), the role it needs, its help text and the key
of the core's handler. Nothing else in the code lists commands: the core dispatches
through this table and answers help, unknown commands, usage errors and refusals
from it; each platform renders it in its own syntax.

A :class:`Surface` is how people type commands somewhere: the terminal types
``/approve v3``; Slack ``/chatloop approve v3`` (the platform builds its surface
with its slash command as the prefix); Discord app commands take named options,
``/approve version:v3``. A platform passes its surface with every
:class:`~bot.core.events.CommandEvent`, so a usage error, a refusal or the help
speaks the syntax the person just used. Commands that judge the last answer
(``up``, ``down``, ``flag``) are commands only where answers carry no controls; a
surface with 👍/👎 buttons and a "Flag and correct" action says so
(``reply_controls``) and leaves them out.

Two pure helpers sit between typed text and the table: :func:`split` (a surface's
typed line -> name and arguments, the last free-text argument kept as typed) and
:func:`bind` (the arguments a surface delivered -> the command's values, or None
when they do not fit its usage).

It knows no platform name and does no I/O; the handlers are the core's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from storage.models import Role

ArgKind = Literal["word", "text", "number", "integer"]
"""``word``: one word; ``text``: the rest of the line (always last); ``number`` and
``integer``: typed as a word, a number option where a surface has typed options."""


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument of a command. ``name`` is an identifier (a Discord option name)."""

    name: str
    help: str
    kind: ArgKind = "word"
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None

    @property
    def label(self) -> str:
        """The placeholder's words: ``right_answer`` -> ``right answer``."""
        return self.name.replace("_", " ")


@dataclass(frozen=True, slots=True)
class Command:
    """One command. A sub-command's ``name`` is its full path (``"memory add"``)."""

    name: str
    help: str
    role: Role = Role.CUSTOMER
    args: tuple[Arg, ...] = ()
    handler: str = ""
    """The core's handler key; the (parent's) name when empty."""
    separator: str = ""
    """Typed between the arguments on positional surfaces (``add <question> | <answer>``)."""
    subcommands: tuple[Command, ...] = ()
    default: str = ""
    """The sub-command run when none is typed (``/memory`` lists)."""
    on_reply: bool = False
    """Judges the last answer; surfaces with controls on answers offer it there instead."""
    tabular: bool = False
    """The answer is aligned columns: show it in a monospace font."""
    refusal: str = ""
    """What someone without the role is told (default: "Only ... can use <command>.")."""

    @property
    def word(self) -> str:
        """The last word of the name (a sub-command's own name)."""
        return self.name.rsplit(" ", 1)[-1]

    @property
    def key(self) -> str:
        return self.handler or self.name.split(" ", 1)[0]

    def subcommand(self, word: str) -> Command | None:
        return next((c for c in self.subcommands if c.word == word.lower()), None)


class CommandTable:
    """The commands in the order help lists them."""

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands = tuple(commands)
        names = [c.name for c in self.commands]
        if len(set(names)) != len(names):
            raise ValueError(f"a command is defined twice: {names}")
        for command in self.walk():
            kinds = [a.kind for a in command.args]
            if "text" in kinds[:-1] and not command.separator:
                raise ValueError(f"{command.name}: only the last argument can take the rest")

    def __iter__(self) -> Iterator[Command]:
        return iter(self.commands)

    def get(self, name: str) -> Command | None:
        """The command called ``name`` (a path: ``"memory add"`` finds the sub-command)."""
        first, _, rest = name.lower().strip().lstrip("/").partition(" ")
        command = next((c for c in self.commands if c.name == first), None)
        if command is not None and rest.strip():
            return command.subcommand(rest.strip())
        return command

    def walk(self) -> Iterator[Command]:
        """Every command and sub-command."""
        for command in self.commands:
            yield command
            yield from command.subcommands


FLAG_REFUSED = "Only support staff can flag and correct answers."

_VERSION = Arg("version", "the adapter version")
_ENTRY = Arg("id", "the entry id (like 12 or #12)", kind="integer", minimum=1)

COMMANDS = CommandTable(
    [
        Command(
            "up",
            "the answer was helpful",
            args=(Arg("reason", "why (optional)", kind="text", optional=True),),
            on_reply=True,
        ),
        Command(
            "down",
            "the answer was not helpful",
            args=(Arg("reason", "what was wrong (optional)", kind="text", optional=True),),
            on_reply=True,
        ),
        Command(
            "flag",
            "mark the answer as wrong and give the right one",
            role=Role.STAFF,
            args=(Arg("right_answer", "the correct answer", kind="text"),),
            on_reply=True,
            refusal=FLAG_REFUSED,
        ),
        Command(
            "memory",
            "the answer memory (approved answers I retrieve from)",
            role=Role.STAFF,
            default="list",
            subcommands=(
                Command(
                    "memory list",
                    "the active entries here, newest first",
                    role=Role.STAFF,
                    args=(Arg("page", "the page", kind="integer", optional=True, minimum=1),),
                ),
                Command(
                    "memory search",
                    "the entries I would retrieve for a question",
                    role=Role.STAFF,
                    args=(Arg("question", "a question", kind="text"),),
                ),
                Command(
                    "memory show",
                    "one entry with its provenance",
                    role=Role.STAFF,
                    args=(_ENTRY,),
                ),
                Command(
                    "memory add",
                    "a curated entry",
                    role=Role.STAFF,
                    args=(
                        Arg("question", "the question", kind="text"),
                        Arg("answer", "its approved answer", kind="text"),
                    ),
                    separator="|",
                ),
                Command(
                    "memory edit",
                    "change an entry's answer",
                    role=Role.STAFF,
                    args=(_ENTRY, Arg("new_answer", "the new answer", kind="text")),
                ),
                Command(
                    "memory retire",
                    "stop using an entry",
                    role=Role.STAFF,
                    args=(_ENTRY, Arg("reason", "why (optional)", kind="text", optional=True)),
                ),
            ),
        ),
        Command(
            "status",
            "what is serving and what awaits approval",
            role=Role.MAINTAINER,
            tabular=True,
        ),
        Command(
            "adapters", "every adapter version and its state", role=Role.MAINTAINER, tabular=True
        ),
        Command(
            "approve",
            "approve an adapter version and make it active",
            role=Role.MAINTAINER,
            args=(_VERSION,),
        ),
        Command(
            "reject",
            "reject an adapter version",
            role=Role.MAINTAINER,
            args=(_VERSION, Arg("reason", "why (optional)", kind="text", optional=True)),
        ),
        Command(
            "rollback",
            "go back to the adapter served before (v3 -> v2 -> ... -> base)",
            role=Role.MAINTAINER,
            args=(Arg("reason", "why (optional)", kind="text", optional=True),),
        ),
        Command(
            "canary",
            "serve a version to a share of conversations (0 stops the canary)",
            role=Role.MAINTAINER,
            args=(
                _VERSION,
                Arg(
                    "percent",
                    "the share of conversations, 0-100",
                    kind="number",
                    maximum=100.0,
                    minimum=0.0,
                ),
            ),
        ),
        Command(
            "help",
            "this list, or the usage of one command",
            args=(Arg("command", "a command", kind="text", optional=True),),
        ),
    ]
)

_AUDIENCES = (
    (Role.CUSTOMER, "Everyone:"),
    (Role.STAFF, "Support staff and maintainers:"),
    (Role.MAINTAINER, "Maintainers:"),
)


@dataclass(frozen=True, slots=True)
class Surface:
    """How people type commands on one surface, and how help is written there.

    ``prefix`` starts every command (``"/"``, ``"/chatloop "``); ``named``: options
    are typed by name (``version:v3``) rather than by position; ``reply_controls``:
    answers carry vote and flag controls, so ``on_reply`` commands are not offered;
    ``intro`` opens the help; ``code`` wraps a command in help (Markdown's backtick),
    where the terminal aligns columns instead.
    """

    prefix: str = "/"
    named: bool = False
    reply_controls: bool = False
    intro: str = "Ask me anything and I will answer."
    code: str = ""

    def invocation(self, command: Command) -> str:
        return f"{self.prefix}{command.name}"

    def placeholder(self, arg: Arg) -> str:
        return f"{arg.name}:<{arg.label}>" if self.named else f"<{arg.label}>"

    def usage(self, command: Command) -> str:
        """The command as typed here: ``/reject <version> [reason]``."""
        if command.subcommands:
            words = "|".join(c.word for c in command.subcommands)
            return f"{self.invocation(command)} {words}"
        parts = [self.invocation(command)]
        for i, arg in enumerate(command.args):
            if i and command.separator and not self.named:
                parts.append(command.separator)
            if not arg.optional:
                parts.append(self.placeholder(arg))
            else:  # /reject <version> [reason];  /reject version:<version> [reason:<reason>]
                parts.append(f"[{self.placeholder(arg) if self.named else arg.label}]")
        return " ".join(parts)

    def call(self, command: Command, *values: str) -> str:
        """The command as typed here with ``values``: ``/memory list 2``, ``page:2``."""
        parts = [self.invocation(command)]
        for i, (arg, value) in enumerate(zip(command.args, values, strict=False)):
            if i and command.separator and not self.named:
                parts.append(command.separator)
            parts.append(f"{arg.name}:{value}" if self.named else value)
        return " ".join(parts)

    def offers(self, command: Command) -> bool:
        """Whether people give ``command`` here as a command."""
        return not (command.on_reply and self.reply_controls)

    def help(self, table: CommandTable = COMMANDS, *, command: Command | None = None) -> str:
        """The help: every command offered here by audience, or one command's usage."""
        if command is not None:
            lines = [c for c in (command.subcommands or (command,)) if self.offers(c)]
            return "\n".join([f"{self.invocation(command)}: {command.help}", *self._lines(lines)])
        out = [self.intro] if self.intro else []
        for role, title in _AUDIENCES:
            chosen: list[Command] = []
            for c in table:
                if c.role is role and self.offers(c):
                    chosen.extend(c.subcommands or (c,))
            if chosen:
                out.append(title)
                out.extend(self._lines(chosen))
        return "\n".join(out)

    def _lines(self, commands: Sequence[Command]) -> list[str]:
        usages = [self.usage(c) for c in commands]
        if self.code:
            q = self.code
            return [f"• {q}{u}{q} {c.help}" for u, c in zip(usages, commands, strict=True)]
        width = max(len(u) for u in usages) + 2
        return [f"  {u:<{width}}{c.help}" for u, c in zip(usages, commands, strict=True)]

    def unknown(self, name: str) -> str:
        help_command = COMMANDS.get("help")
        assert help_command is not None
        return (
            f"Unknown command {self.prefix}{name}. "
            f"Type {self.invocation(help_command)} for the list."
        )

    def refusal(self, command: Command) -> str:
        if command.refusal:
            return command.refusal
        who = "maintainers" if command.role is Role.MAINTAINER else "support staff and maintainers"
        return f"Only {who} can use {self.invocation(command)}."


TERMINAL = Surface()
"""The terminal's syntax (``/approve v3``): the console, and the default of a CommandEvent."""


_WORD = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|(\S+))""")


def _words(text: str) -> Iterator[tuple[str, int]]:
    """Shell-like words (quotes group) and where each ends."""
    pos = 0
    while (match := _WORD.match(text, pos)) and match.end() > pos:
        double, single, bare = match.groups()
        yield (
            (double if double is not None else single if single is not None else bare),
            (match.end()),
        )
        pos = match.end()


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and text[0] not in text[1:-1]:
        return text[1:-1]
    return text


def split(text: str) -> tuple[str, tuple[str, ...]]:
    """A typed command (without its surface's prefix) as ``(name, args)``.

    Arguments are words (quotes group several); an argument that takes the rest of the
    line gets it as typed (one pair of surrounding quotes removed), so ``/flag`` keeps
    the answer's own quotes and spacing. An empty line is ``help``.
    """
    text = text.strip()
    if not text:
        return "help", ()
    name, _, rest = text.partition(" ")
    name = name.lower().lstrip("/")
    head: tuple[str, ...] = ()
    command = COMMANDS.get(name)
    if command is not None and command.subcommands and rest.strip():
        word, _, tail = rest.strip().partition(" ")
        sub = command.subcommand(word)
        if sub is not None:
            head, command, rest = (sub.word,), sub, tail
    if command is None:
        return name or "help", tuple(w for w, _ in _words(rest))
    args: list[str] = []
    leading = [a for a in command.args if a.kind != "text"] if not command.separator else []
    pos = 0
    for _arg, (word, end) in zip(leading, _words(rest), strict=False):
        args.append(word)
        pos = end
    remainder = rest[pos:].strip()
    if remainder:
        takes_rest = command.separator or (command.args and command.args[-1].kind == "text")
        if takes_rest:
            args.append(_unquote(remainder))
        else:
            args.extend(w for w, _ in _words(remainder))
    return name, (*head, *args)


def bind(command: Command, args: Sequence[str], *, by_name: bool = False) -> tuple[str, ...] | None:
    """The arguments a surface delivered as ``command``'s values, or None (usage error).

    Typed words (``("v3", "too", "chatty")``): the last free-text argument takes the
    rest, and with a separator the text is cut there. ``by_name``: the surface
    delivers one value per argument, in order (Discord's options), taken as they are.
    Optional arguments left out are left out.
    """
    if by_name:
        given = tuple(str(x).strip() for x in args)
        required = sum(1 for a in command.args if not a.optional)
        if not required <= len(given) <= len(command.args) or not all(given):
            return None
        return given
    words = [a for a in (str(x).strip() for x in args) if a]
    if command.separator:
        count = len(command.args)
        cut = tuple(p.strip() for p in " ".join(words).split(command.separator, count - 1))
        return cut if len(cut) == count and all(cut) else None
    values: list[str] = []
    for i, arg in enumerate(command.args):
        if arg.kind == "text":
            rest = " ".join(words[i:])
            if rest:
                values.append(rest)
            elif not arg.optional:
                return None
            return tuple(values)
        if i < len(words):
            values.append(words[i])
        elif not arg.optional:
            return None
    if len(words) > len(command.args):
        return None
    return tuple(values)
