"""The answer memory as the core shows it: the reply note and the ``/memory`` commands.

- :func:`memory_note` is the one wording of "this reply used the answer memory"
  (entry ids); each platform's sink renders it in its own style (a Slack context
  line, a small Discord line, a terminal line).
- :class:`MemoryCommands` runs the sub-commands of ``memory`` in the command table
  (:data:`bot.core.commands.COMMANDS`: list, search, show, add, edit, retire) with
  the values the core bound (usage, help and roles are the core's), on the entries of
  the workspace the command came from (an entry of another workspace is "not found"
  there). Every change goes through
  ``storage.memory.MemoryEntries`` (audited) and is live at once: the index is
  invalidated and the next retrieval on any replica reloads it.

It knows nothing of platforms; the core resolves roles and the workspace.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from bot.core.commands import COMMANDS, TERMINAL, Surface
from bot.core.events import Outcome
from serving.memory import AnswerMemory
from storage.errors import NotFound
from storage.memory import MemoryEntries
from storage.models import MemoryEntry, MemorySource, MemoryStatus

PAGE = 10


def memory_note(entry_ids: Sequence[int]) -> str:
    """The short note shown with a reply whose prompt carried memory entries."""
    if not entry_ids:
        return ""
    ids = ", ".join(f"#{i}" for i in entry_ids)
    return f"📚 from the answer memory: {ids}"


def _clip(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _line(e: MemoryEntry) -> str:
    return f"#{e.id} [{e.source.value}] Q: {_clip(e.question, 60)} → A: {_clip(e.answer, 60)}"


class MemoryCommands:
    """The ``/memory`` sub-commands; one instance per core."""

    def __init__(self, memory: AnswerMemory | None) -> None:
        self.memory = memory

    def run(
        self,
        s: Session,
        sub: str,
        values: tuple[str, ...],
        *,
        actor: str,
        user_id: int,
        workspace_id: int | None,
        surface: Surface = TERMINAL,
    ) -> Outcome:
        """Sub-command ``sub`` (``"add"``) with its bound ``values`` (question, answer)."""
        if sub == "list":
            return self._list(s, workspace_id, values, surface)
        if sub == "search":
            return self.search(workspace_id, values[0])
        if sub == "show":
            return self._show(s, workspace_id, values[0])
        if sub == "add":
            return self._add(s, actor, user_id, workspace_id, values[0], values[1])
        if sub == "edit":
            return self._edit(s, actor, user_id, workspace_id, values[0], values[1])
        if sub == "retire":
            return self._retire(s, actor, workspace_id, values[0], " ".join(values[1:]))
        raise ValueError(f"memory has no sub-command {sub!r}")

    # helpers ------------------------------------------------------------------------
    def _entry(self, s: Session, workspace_id: int | None, arg: str) -> MemoryEntry:
        try:
            entry_id = int(arg.lstrip("#"))
        except ValueError:
            raise ValueError(f"{arg!r} is not an entry id (like 12 or #12)") from None
        row = MemoryEntries(s).get(entry_id)
        if row.workspace_id != workspace_id:
            raise NotFound(f"no answer-memory entry #{entry_id} here")
        return row

    def _embedding(self, question: str, answer: str) -> tuple[bytes | None, str | None]:
        if self.memory is None:
            return None, None
        return self.memory.embed_entry(question, answer), self.memory.embedding_model

    def _changed(self) -> None:
        if self.memory is not None:
            self.memory.invalidate()

    # sub-commands ---------------------------------------------------------------------
    def _list(
        self, s: Session, workspace_id: int | None, values: tuple[str, ...], surface: Surface
    ) -> Outcome:
        page = int(values[0]) if values and values[0].isdigit() else 1
        rows = MemoryEntries(s).list(
            workspace_ids=[workspace_id], limit=PAGE + 1, offset=(max(page, 1) - 1) * PAGE
        )
        if not rows:
            return Outcome(ok=True, text="The answer memory has no active entries here yet.")
        lines = [_line(e) for e in rows[:PAGE]]
        if len(rows) > PAGE:
            more = COMMANDS.get("memory list")
            assert more is not None
            lines.append(f"… more: {surface.call(more, str(page + 1))}")
        return Outcome(ok=True, text="\n".join(lines))

    def search(self, workspace_id: int | None, query: str) -> Outcome:
        """Outside any transaction: retrieval opens its own."""
        if self.memory is None:
            return Outcome(ok=False, text="Retrieval from the answer memory is turned off.")
        hits = self.memory.search(query, workspace_id=workspace_id)
        if not hits:
            return Outcome(ok=True, text="No entry is close enough to that question.")
        lines = [
            f"#{h.entry_id} score {h.score:.2f}: Q: {_clip(h.question, 60)} "
            f"→ A: {_clip(h.answer, 60)}"
            for h in hits
        ]
        return Outcome(ok=True, text="\n".join(lines))

    def _show(self, s: Session, workspace_id: int | None, entry: str) -> Outcome:
        e = self._entry(s, workspace_id, entry)
        where = f"conversation {e.conversation_id}, reply {e.reply_id}" if e.reply_id else "—"
        text = "\n".join(
            [
                f"#{e.id} ({e.status.value}, {e.source.value}, revision {e.revision})",
                f"Q: {e.question}",
                f"A: {e.answer}",
                f"added by {e.created_by} at {e.created_at:%Y-%m-%d %H:%M} UTC; from {where}",
                f"last changed by {e.updated_by} at {e.updated_at:%Y-%m-%d %H:%M} UTC",
            ]
        )
        return Outcome(ok=True, text=text)

    def _add(
        self,
        s: Session,
        actor: str,
        user_id: int,
        workspace_id: int | None,
        question: str,
        answer: str,
    ) -> Outcome:
        question, answer = question.strip(), answer.strip()
        embedding, model = self._embedding(question, answer)
        row = MemoryEntries(s).add(
            workspace_id=workspace_id,
            question=question,
            answer=answer,
            source=MemorySource.CURATED,
            actor=actor,
            created_by_user_id=user_id,
            embedding=embedding,
            embedding_model=model,
        )
        self._changed()
        return Outcome(ok=True, text=f"📚 Added answer-memory entry #{row.id}; it is live now.")

    def _edit(
        self,
        s: Session,
        actor: str,
        user_id: int,
        workspace_id: int | None,
        entry: str,
        answer: str,
    ) -> Outcome:
        e = self._entry(s, workspace_id, entry)
        if e.status is not MemoryStatus.ACTIVE:
            return Outcome(ok=False, text=f"#{e.id} is retired; add a new entry instead.")
        embedding, model = self._embedding(e.question, answer)
        MemoryEntries(s).edit(
            e.id,
            actor=actor,
            answer=answer,
            user_id=user_id,
            embedding=embedding,
            embedding_model=model,
        )
        self._changed()
        return Outcome(ok=True, text=f"✏️ Entry #{e.id} updated (revision {e.revision}).")

    def _retire(
        self, s: Session, actor: str, workspace_id: int | None, entry: str, reason: str
    ) -> Outcome:
        e = self._entry(s, workspace_id, entry)
        MemoryEntries(s).retire(e.id, actor=actor, reason=reason or None)
        self._changed()
        return Outcome(ok=True, text=f"🗄️ Entry #{e.id} retired; I will no longer use it.")
