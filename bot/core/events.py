"""Core events: what platform adapters hand to the core, as frozen dataclasses.

Raw platform payloads stay at the edge (TypedDicts in each adapter); the core only
ever sees these. A :class:`ReplySink` is the adapter's way of showing a reply as it
streams in and of posting notices (errors, help, acknowledgements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.core.commands import TERMINAL, Surface

PlaceKind = Literal["dm", "channel", "thread", "console"]


@dataclass(frozen=True, slots=True)
class Place:
    """Where something happened: a DM, a channel thread, the terminal."""

    platform: str
    channel_id: str
    kind: PlaceKind
    thread_id: str = ""
    workspace_id: str = ""


@dataclass(frozen=True, slots=True)
class Person:
    """Who did it. ``groups`` are the principals of the person's platform groups or roles
    (``"slack-group:S1"``, ``"discord-role:42"``), written by the platform that knows them."""

    user_id: str
    display_name: str = ""
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """A person wrote something the bot should answer (or a slash command)."""

    place: Place
    author: Person
    text: str
    event_id: str = ""
    platform_message_id: str = ""


@dataclass(frozen=True, slots=True)
class ReplyRef:
    """Which bot reply a vote or flag is about.

    Either the stored ``reply_id``, or the platform's id of the posted reply; with
    neither, the last reply in ``place`` is meant (terminal ``/up``).
    """

    place: Place
    reply_id: int | None = None
    platform_message_id: str = ""


@dataclass(frozen=True, slots=True)
class VoteEvent:
    """Thumbs up (+1), down (-1) or retracted (0) on a bot reply."""

    ref: ReplyRef
    voter: Person
    value: int
    source: Literal["button", "reaction", "command"]
    reason: str | None = None
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class FlagEvent:
    """A staff member marks a reply as wrong and (optionally) gives the right answer."""

    ref: ReplyRef
    flagger: Person
    reason: str | None
    correction: str | None
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class CommandEvent:
    """A command of :data:`bot.core.commands.COMMANDS` (``/approve v3``), already split.

    ``surface`` is how the person typed it there; the core answers usage errors,
    refusals and help in that syntax.
    """

    place: Place
    author: Person
    name: str
    args: tuple[str, ...] = ()
    event_id: str = ""
    surface: Surface = TERMINAL


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the core did with an event, for the adapter to show (or not)."""

    ok: bool
    text: str
    reply_id: int | None = None
    duplicate: bool = False


class ReplySink(Protocol):
    """The adapter side of one streamed reply."""

    async def delta(self, text: str) -> None:
        """More text of the reply arrived (adapters throttle their edits)."""

    async def done(self, text: str, *, reply_id: int, note: str = "") -> str | Sequence[str]:
        """The reply is complete; show ``text`` with feedback controls.

        ``note`` (may be empty) is a short line the core adds about the reply, such as
        which answer-memory entries it used (:func:`bot.core.memory.memory_note`);
        show it apart from the reply text, in the platform's small print.
        Returns the platform's id of the posted reply ("" if it has none) or, for a
        reply posted as several messages (its parts), every part's id, first part
        first, all in the place's channel. The core stores them (``reply_parts``), so
        a vote, reaction or flag on any part reaches the reply.
        """
        ...

    async def notice(self, text: str) -> None:
        """Show a message that is not a model reply (error, help, refusal)."""
