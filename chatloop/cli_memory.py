"""``chatloop memory``: the answer memory from the command line.

::

    chatloop memory list [--workspace slack:T1] [--all] [--retired] [--json]
    chatloop memory add QUESTION ANSWER [--workspace slack:T1]
    chatloop memory import pairs.jsonl [--workspace slack:T1]
    chatloop memory search QUESTION [--workspace slack:T1]
    chatloop memory retire ID [--reason TEXT]

``--workspace`` is ``<platform>:<team or guild id>`` (the ids the adapters store);
without it the entries belong to the scope of conversations without a workspace
(the terminal). An import reads JSON lines of ``{"question", "answer"}`` (other
keys are ignored), skips pairs already active, and retires an older entry of the
same question. Entries are embedded with the configured model as they are added
(when it cannot load, they are stored without a vector and embedded by the next
replica that loads the index). Every change is an audit row by ``cli:<os user>``.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chatloop.app import Database
    from chatloop.settings import Settings
    from serving.embed import Embedder
    from storage.models import MemoryEntry

memory_app = typer.Typer(
    help="The answer memory: approved answers the bot retrieves.", no_args_is_help=True
)

WorkspaceOpt = Annotated[
    str,
    typer.Option(
        "--workspace",
        help="<platform>:<workspace id>, e.g. slack:T0123 or discord:1100...; "
        "empty = conversations without a workspace (the terminal).",
    ),
]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _setup() -> tuple[Settings, Database]:
    from chatloop.app import open_database
    from chatloop.cli import _fail, _logging, _settings
    from storage.errors import StorageError

    settings = _settings()
    _logging(settings, quiet=True)
    try:
        return settings, open_database(settings)
    except StorageError as exc:
        raise _fail("cannot open the database", exc) from None


def _workspace_id(s: Session, workspace: str) -> int | None:
    from storage.repositories import Workspaces

    if not workspace:
        return None
    platform, sep, external_id = workspace.partition(":")
    if not sep or not platform or not external_id:
        raise typer.BadParameter(
            f"{workspace!r}: use <platform>:<workspace id>", param_hint="--workspace"
        )
    return Workspaces(s).get_or_create(platform, external_id).id


def _embedder(settings: Settings) -> Embedder | None:
    from serving.embed import load_embedder
    from serving.errors import ModelLoadError

    try:
        return load_embedder(settings.memory_embedding_model, single_threaded=False)
    except ModelLoadError as exc:
        typer.echo(f"chatloop: warning: storing without embeddings: {exc}", err=True)
        return None


def _row(e: MemoryEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "workspace_id": e.workspace_id,
        "status": e.status.value,
        "source": e.source.value,
        "question": e.question,
        "answer": e.answer,
        "created_by": e.created_by,
        "created_at": e.created_at.isoformat(),
        "updated_by": e.updated_by,
        "updated_at": e.updated_at.isoformat(),
        "revision": e.revision,
        "conversation_id": e.conversation_id,
        "reply_id": e.reply_id,
        "embedding_model": e.embedding_model,
    }


@memory_app.command("list")
def memory_list(
    workspace: WorkspaceOpt = "",
    all_workspaces: Annotated[bool, typer.Option("--all", help="Every workspace.")] = False,
    retired: Annotated[bool, typer.Option(help="Include retired entries.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The entries, newest first."""
    from storage.db import transaction
    from storage.memory import MemoryEntries
    from storage.models import MemoryStatus

    _, db = _setup()
    statuses = list(MemoryStatus) if retired else [MemoryStatus.ACTIVE]
    try:
        with transaction(db.sessions) as s:
            ws = None if all_workspaces else [_workspace_id(s, workspace)]
            rows = [
                _row(e)
                for e in MemoryEntries(s).list(workspace_ids=ws, statuses=statuses, limit=limit)
            ]
    finally:
        db.close()
    for r in rows:
        if as_json:
            typer.echo(json.dumps(r, ensure_ascii=False))
        else:
            typer.echo(
                f"#{r['id']:<5} {r['status']:<8} {r['source']:<10} "
                f"Q: {_clip(r['question'])}  A: {_clip(r['answer'])}"
            )
    if not rows and not as_json:
        typer.echo("no entries")


def _clip(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


@memory_app.command("add")
def memory_add(
    question: Annotated[str, typer.Argument(help="The question, as customers ask it.")],
    answer: Annotated[str, typer.Argument(help="The approved answer.")],
    workspace: WorkspaceOpt = "",
) -> None:
    """Add one curated entry (live for the next message on every replica)."""
    added = _add_pairs([(question, answer)], workspace=workspace)
    typer.echo(f"added entry #{added[0]}" if added else "already in the memory")


@memory_app.command("import")
def memory_import(
    path: Annotated[Path, typer.Argument(help="JSON lines of {question, answer}.", exists=True)],
    workspace: WorkspaceOpt = "",
) -> None:
    """Add curated entries from a JSON-lines file; prints a JSON summary."""
    pairs: list[tuple[str, str]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question, answer = str(item["question"]), str(item["answer"])
        except (ValueError, KeyError, TypeError) as exc:
            typer.echo(f"chatloop: {path}:{n}: not a {{question, answer}} object ({exc})", err=True)
            raise typer.Exit(1) from None
        pairs.append((question, answer))
    added = _add_pairs(pairs, workspace=workspace)
    typer.echo(
        json.dumps({"read": len(pairs), "added": len(added), "skipped": len(pairs) - len(added)})
    )


def _batches(items: list[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _add_pairs(pairs: list[tuple[str, str]], *, workspace: str) -> list[int]:
    """Store the pairs not already active (embedded); the ids of the new entries."""
    from sqlalchemy import select
    from tqdm import tqdm

    from serving.embed import to_bytes
    from serving.memory import entry_text
    from storage.db import transaction
    from storage.memory import MemoryEntries, question_key
    from storage.models import MemoryEntry, MemorySource, MemoryStatus

    settings, db = _setup()
    embedder = _embedder(settings)
    actor = _actor()
    added: list[int] = []
    bar = tqdm(
        total=len(pairs), desc="adding", unit="entry", file=sys.stderr, disable=len(pairs) < 50
    )
    try:
        for batch in _batches(pairs, 64):
            texts = [entry_text(q.strip(), a.strip()) for q, a in batch]
            vectors = embedder.embed(texts) if embedder else None
            with transaction(db.sessions) as s:
                ws = _workspace_id(s, workspace)
                repo = MemoryEntries(s)
                for i, (question, answer) in enumerate(batch):
                    same = s.scalars(
                        select(MemoryEntry.answer).where(
                            MemoryEntry.question_hash == question_key(question.strip()),
                            MemoryEntry.workspace_id.is_(None)
                            if ws is None
                            else MemoryEntry.workspace_id == ws,
                            MemoryEntry.status == MemoryStatus.ACTIVE,
                        )
                    ).all()
                    if answer.strip() in same:
                        continue
                    row = repo.add(
                        workspace_id=ws,
                        question=question,
                        answer=answer,
                        source=MemorySource.CURATED,
                        actor=actor,
                        embedding=to_bytes(vectors[i]) if vectors is not None else None,
                        embedding_model=embedder.model_id if embedder else None,
                    )
                    added.append(row.id)
            bar.update(len(batch))
    except ValueError as exc:
        typer.echo(f"chatloop: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        bar.close()
        db.close()
    return added


@memory_app.command("search")
def memory_search(
    question: Annotated[str, typer.Argument(help="A question as a customer would ask it.")],
    workspace: WorkspaceOpt = "",
) -> None:
    """The entries the bot would retrieve for a question, with their scores."""
    from chatloop.app import build_memory
    from serving.memory import hits_table
    from storage.db import transaction

    settings, db = _setup()
    try:
        with transaction(db.sessions) as s:
            ws = _workspace_id(s, workspace)
        memory = build_memory(settings, db)
        if memory is None:
            typer.echo("the answer memory is turned off (CHATLOOP_MEMORY_ENABLED)")
            return
        hits = memory.search(question, workspace_id=ws)
    finally:
        db.close()
    typer.echo("\n".join(hits_table(hits)) if hits else "no entry is close enough")


@memory_app.command("retire")
def memory_retire(
    entry_id: Annotated[int, typer.Argument(help="The entry id (from list).")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """Stop using an entry (kept, with its history; the bot no longer retrieves it)."""
    from storage.db import transaction
    from storage.errors import NotFound
    from storage.memory import MemoryEntries

    _, db = _setup()
    try:
        with transaction(db.sessions) as s:
            MemoryEntries(s).retire(entry_id, actor=_actor(), reason=reason or None)
    except (NotFound, ValueError) as exc:
        typer.echo(f"chatloop: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        db.close()
    typer.echo(f"retired entry #{entry_id}")
