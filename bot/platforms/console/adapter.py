"""Chat with the bot in a terminal, or script it through stdin.

Each line is a message; lines starting with ``/`` are commands of the core's
table (:data:`bot.core.commands.COMMANDS`, in the terminal syntax ``/approve v3``;
``/help`` lists them) or ``/quit``. On a TTY it prompts and streams the reply as it
is generated; when stdin is not a TTY it reads lines until end of input, decoding
invalid UTF-8 with replacement characters, so ``printf 'question\\n/up\\n' | chatloop chat`` works.

Every run of ``chatloop chat`` is one conversation (a console thread); the commands
that judge an answer (``/up``, ``/down``, ``/flag``) judge the last reply in it. Like
every adapter it only translates: the core decides, answers and records.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import TextIO

from bot.core import CommandEvent, Core, MessageEvent, Outcome, Person, Place
from bot.core.commands import COMMANDS, TERMINAL, split
from bot.core.text import decode

PLATFORM = "console"
QUIT = {"/quit", "/exit", "/q"}
CONTROLS = " ".join(TERMINAL.usage(c) for c in COMMANDS if c.on_reply)
"""The commands shown under every reply: ``/up [reason] /down [reason] /flag <right answer>``."""


class _TerminalSink:
    def __init__(self, out: TextIO, *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self.started = False

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def delta(self, text: str) -> None:
        if not self.tty:
            return  # scripted use: print the final text once, not a stream of fragments
        if not self.started:
            self._write("bot> ")
            self.started = True
        self._write(text)

    async def done(self, text: str, *, reply_id: int, note: str = "") -> str:
        if self.tty and self.started:
            self._write("\n")
        else:
            self._write(f"bot> {text}\n")
        if note:
            self._write(f"     {note}\n")
        self._write(f"     (reply #{reply_id} · {CONTROLS} · /help)\n")
        return ""

    async def notice(self, text: str) -> None:
        if self.started:
            self._write("\n")
        self._write(f"bot> {text}\n")


class ConsoleAdapter:
    """Reads lines from a terminal or a pipe and hands them to the core."""

    def __init__(
        self,
        *,
        core: Core,
        user_id: str,
        display_name: str = "",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        session_id: str | None = None,
    ) -> None:
        self.core = core
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.person = Person(user_id=user_id, display_name=display_name or user_id)
        session = session_id or uuid.uuid4().hex[:12]
        self.place = Place(
            platform=PLATFORM, channel_id=f"terminal:{user_id}", thread_id=session, kind="console"
        )
        self.tty = self.stdin.isatty()

    async def _read_line(self) -> str | None:
        if self.tty:
            try:
                return await asyncio.to_thread(input, "you> ")
            except EOFError:
                return None
        buffer = getattr(self.stdin, "buffer", None)
        raw = await asyncio.to_thread(buffer.readline if buffer else self.stdin.readline)
        if not raw:
            return None
        line = decode(raw) if isinstance(raw, bytes) else raw
        return line.rstrip("\r\n")

    async def run(self) -> None:
        if self.tty:
            self.stdout.write("chatloop: ask a question, /help for commands, /quit to leave.\n")
        while (line := await self._read_line()) is not None:
            if line.strip() in QUIT:
                break
            if not line.strip() and not self.tty:
                continue
            await self.handle_line(line)

    async def handle_line(self, line: str) -> Outcome:
        sink = _TerminalSink(self.stdout, tty=self.tty)
        stripped = line.strip()
        if stripped.startswith("/") and len(stripped) > 1:
            outcome = await self._command(stripped)
            if outcome.text:
                await sink.notice(outcome.text)
            return outcome
        return await self.core.on_message(
            MessageEvent(place=self.place, author=self.person, text=line), sink
        )

    async def _command(self, line: str) -> Outcome:
        name, args = split(line[1:])
        return await self.core.on_command(
            CommandEvent(place=self.place, author=self.person, name=name, args=args)
        )
