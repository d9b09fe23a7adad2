"""Dataset snapshots: select new feedback, anonymize, clean, split, write immutably.

``build_snapshot`` is what ``chatloop data snapshot`` (and later the learning loop)
runs:

1. **select** every bot reply that has a vote or a staff flag and is either new or
   newly judged since the last snapshot (the selection rule, below), with its
   question, its *current* votes and flags, and the names of the conversation's
   participants;
2. **anonymize** (:func:`anonymize_conversation`) every text of each selected
   conversation (messages, replies, flag corrections) in chronological order with
   one pseudonym map per conversation, from the raw text whenever it still exists, so
   ``<PERSON_1>`` is the same person in the question, the answer and a correction
   written days later, in this snapshot and in the next. Only where retention has
   already dropped the raw text is the stored anonymized text used (its placeholder
   numbers are reserved, so a new person never reuses them). The anonymized text is
   stored beside the raw text in the database, so retention can later drop the raw
   text;
3. drop questions that are in the frozen **evaluation set** (they never train);
4. **clean** (``learning.clean``: normalization, votes, flags and corrections,
   noise, duplicates, per-user caps, language, balance), every drop counted by reason;
5. **split** train/eval by a hash of the conversation, so no conversation is on
   both sides;
6. **write** ``train.jsonl``, ``eval.jsonl`` and ``manifest.json`` (written last: the
   content hash, counts by stage and reason, PII counts by type, source message ids,
   the selection watermarks) into a temporary directory renamed into place and made
   read-only (files 0o444, directory 0o555), and register the snapshot with the
   users whose data it holds (an erasure taints it).

**Selection rule.** A snapshot records three watermarks: the newest message id it
selected (``until_message_id``), the newest vote change it saw (``feedback_until``,
the largest ``feedback.updated_at``) and the newest flag (``flag_until_id``). The next
snapshot selects a reply with a vote or a flag when its message is newer than the
first, *or* one of its votes was cast, changed or retracted after the second, *or* it
got a flag newer than the third. A re-selected reply carries all its current votes
and its newest correction, so a later snapshot supersedes what an earlier one held
for the same ``source`` (``reply:<id>``); a snapshot with the same content as an
existing one is not written again. Limits: watermarks compare values written by the
bot, so a vote whose transaction commits after a snapshot read a *newer* vote is
only seen once it changes again (the same holds for message ids); and anonymization
is consistent across snapshots only as far back as raw text is retained.

Training rows carry no platform ids and no user ids, only anonymized text. This
module knows nothing of models, training or platforms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from learning.clean import CleanConfig, Example, clean
from learning.errors import LearningError
from learning.evalset import eval_hashes, question_hash
from storage.db import transaction
from storage.models import DatasetSnapshot, Feedback, Flag, Message, Reply, User, utcnow
from storage.repositories import Snapshots

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 2
FILE_MODE = 0o444
DIR_MODE = 0o555


class SnapshotError(LearningError):
    """A snapshot could not be built or read."""


class TextAnonymizer(Protocol):
    """What the snapshot needs of :class:`learning.anonymize.Anonymizer`."""

    def anonymize_many(
        self,
        texts: Sequence[str],
        *,
        conversation: Any = None,
        participants: Sequence[str] = (),
    ) -> Sequence[Any]: ...


# --------------------------------------------------------------------- conversation texts

_KIND_ORDER = {"message": 0, "reply": 1, "flag": 2}
_PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)_(\d+)>")


def _aware(at: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes, PostgreSQL aware ones: compare as aware."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ConversationText:
    """One stored text of a conversation: a message, a reply or a flag's correction."""

    kind: str  # "message", "reply" or "flag"
    key: int  # the row id in its table
    at: datetime
    raw: str | None
    anon: str | None

    @property
    def order(self) -> tuple[datetime, int, int]:
        return (_aware(self.at), _KIND_ORDER[self.kind], self.key)


@dataclass(frozen=True, slots=True)
class AnonText:
    """A text's anonymized form; ``fresh`` when it was just made from the raw text."""

    text: str
    entity_types: tuple[str, ...]
    fresh: bool


def load_conversation_texts(
    session: Session, conversation_ids: Iterable[int], *, before: datetime | None = None
) -> dict[int, list[ConversationText]]:
    """Every text of these conversations (older than ``before``), chronologically."""
    ids = sorted(set(conversation_ids))
    out: dict[int, list[ConversationText]] = {c: [] for c in ids}
    if not ids:
        return out
    queries: list[tuple[str, Any]] = [
        (
            "message",
            select(
                Message.id, Message.conversation_id, Message.created_at,
                Message.raw_text, Message.anon_text,
            ).where(Message.conversation_id.in_(ids)),
        ),
        (
            "reply",
            select(
                Reply.id, Reply.conversation_id, Reply.created_at, Reply.text, Reply.anon_text
            ).where(Reply.conversation_id.in_(ids)),
        ),
        (
            "flag",
            select(
                Flag.id, Reply.conversation_id, Flag.created_at,
                Flag.corrected_text, Flag.corrected_anon_text,
            )
            .join(Reply, Reply.id == Flag.reply_id)
            .where(Reply.conversation_id.in_(ids))
            .where(or_(Flag.corrected_text.is_not(None), Flag.corrected_anon_text.is_not(None))),
        ),
    ]  # fmt: skip
    created = {"message": Message.created_at, "reply": Reply.created_at, "flag": Flag.created_at}
    for kind, query in queries:
        if before is not None:
            query = query.where(created[kind] < before)
        for key, conv, at, raw, anon in session.execute(query):
            out[conv].append(ConversationText(kind, key, at, raw, anon))
    for texts in out.values():
        texts.sort(key=lambda t: t.order)
    return out


def participant_names(session: Session, conversation_ids: Iterable[int]) -> dict[int, list[str]]:
    """Display names and platform ids of each conversation's writers, in a stable order."""
    ids = sorted(set(conversation_ids))
    names: dict[int, list[str]] = defaultdict(list)
    if not ids:
        return names
    people = session.execute(
        select(Message.conversation_id, User.id, User.display_name, User.external_id)
        .join(User, User.id == Message.user_id)
        .where(Message.conversation_id.in_(ids))
        .distinct()
        .order_by(Message.conversation_id, User.id)
    ).all()
    for conv_id, _uid, display, external in people:
        for name in (display, external):
            if name and name not in names[conv_id]:
                names[conv_id].append(name)
    return names


def _reserve(cmap: Any, stored: str) -> tuple[str, ...]:
    """Advance ``cmap`` past the placeholders in a stored anonymized text.

    The raw text is gone, so the people behind ``<PERSON_2>`` are unknown; reserving
    the numbers keeps a person first seen later from being numbered ``<PERSON_2>``
    too. Returns the placeholder types found (the text's PII counts).
    """
    found = [(m.group(1), int(m.group(2))) for m in _PLACEHOLDER.finditer(stored)]
    for entity_type, n in found:
        while cmap.counts().get(entity_type, 0) < n:
            cmap.placeholder(entity_type, f"\x00reserved\x00{cmap.counts().get(entity_type, 0)}")
    return tuple(t for t, _ in found)


def anonymize_conversation(
    anonymizer: TextAnonymizer,
    texts: Sequence[ConversationText],
    *,
    participants: Sequence[str] = (),
) -> dict[tuple[str, int], AnonText]:
    """Anonymize one conversation's texts, in the given (chronological) order.

    One :class:`~learning.anonymize.PseudonymMap` numbers the whole conversation;
    raw text is always anonymized afresh (the map is never stored, so it can only be
    rebuilt from the raw texts), the stored anonymized text is used only where the
    raw text is gone. Because the order is chronological and new texts only append,
    a text gets the same placeholders in every run as long as the raw texts before
    it are retained. Texts with neither form are left out.
    """
    from learning.anonymize import PseudonymMap

    cmap = PseudonymMap()
    out: dict[tuple[str, int], AnonText] = {}
    pending: list[ConversationText] = []

    def flush() -> None:
        if not pending:
            return
        results = anonymizer.anonymize_many(
            [t.raw or "" for t in pending], conversation=cmap, participants=participants
        )
        for t, result in zip(pending, results, strict=True):
            types = tuple(e.type for e in result.entities)
            out[(t.kind, t.key)] = AnonText(str(result.text), types, fresh=True)
        pending.clear()

    for t in texts:
        if t.raw is not None:
            pending.append(t)
        elif t.anon is not None:
            flush()
            out[(t.kind, t.key)] = AnonText(t.anon, _reserve(cmap, t.anon), fresh=False)
    flush()
    return out


def store_anonymized(session: Session, results: dict[tuple[str, int], AnonText]) -> int:
    """Write fresh anonymized texts beside the raw ones; returns the rows changed."""
    columns = {
        "message": (Message, "anon_text"),
        "reply": (Reply, "anon_text"),
        "flag": (Flag, "corrected_anon_text"),
    }
    now = utcnow()
    changed = 0
    for (kind, key), result in sorted(results.items()):
        if not result.fresh:
            continue
        model, column = columns[kind]
        obj = session.get(model, key)
        if obj is None:
            continue
        stored = getattr(obj, column)
        if stored == result.text:
            continue
        setattr(obj, column, result.text)
        if isinstance(obj, Message):
            obj.anonymized_at = now
        changed += 1
    session.flush()
    return changed


# --------------------------------------------------------------------- selection


@dataclass
class _Row:
    reply_id: int
    message_id: int
    conversation_id: int
    author_id: int
    reselected: bool
    votes: list[tuple[int, int]] = field(default_factory=list)  # user, value
    flag: tuple[int, int | None] | None = None  # user, flag id of the correction (if any)


@dataclass(frozen=True)
class _Marks:
    message_id: int = 0
    feedback_until: datetime | None = None
    flag_until_id: int | None = None
    flags_since: datetime | None = None  # snapshots made before flag_until_id existed

    @classmethod
    def of(cls, last: DatasetSnapshot | None) -> _Marks:
        if last is None:
            return cls()
        # a snapshot from before the watermark columns: judgements since it was made
        made = _aware(last.created_at)
        return cls(
            message_id=int(last.until_message_id or 0),
            feedback_until=_aware(last.feedback_until) if last.feedback_until else made,
            flag_until_id=last.flag_until_id,
            flags_since=None if last.flag_until_id is not None else made,
        )


@dataclass
class _Selection:
    rows: list[_Row]
    feedback_until: datetime | None
    flag_until_id: int | None


def _select(session: Session, marks: _Marks) -> _Selection:
    wanted: list[Any] = [Reply.message_id > marks.message_id]
    if marks.feedback_until is not None:
        changed = select(Feedback.reply_id).where(Feedback.updated_at > marks.feedback_until)
        wanted.append(Reply.id.in_(changed))
    if marks.flag_until_id is not None:
        wanted.append(Reply.id.in_(select(Flag.reply_id).where(Flag.id > marks.flag_until_id)))
    elif marks.flags_since is not None:
        wanted.append(
            Reply.id.in_(select(Flag.reply_id).where(Flag.created_at > marks.flags_since))
        )
    replies = session.execute(
        select(Reply.id, Message.id, Message.conversation_id, Message.user_id)
        .join(Message, Message.id == Reply.message_id)
        .where(or_(*wanted))
        .order_by(Reply.id)
    ).all()
    rows = {
        rid: _Row(rid, mid, conv, author, reselected=mid <= marks.message_id)
        for rid, mid, conv, author in replies
    }
    feedback_until, flag_until_id = marks.feedback_until, marks.flag_until_id
    if not rows:
        return _Selection([], feedback_until, flag_until_id)
    ids = list(rows)
    votes = session.scalars(
        select(Feedback).where(Feedback.reply_id.in_(ids)).order_by(Feedback.id)
    )
    for fb in votes:
        rows[fb.reply_id].votes.append((fb.user_id, fb.value))
        at = _aware(fb.updated_at)
        feedback_until = at if feedback_until is None else max(feedback_until, at)
    for flag in session.scalars(select(Flag).where(Flag.reply_id.in_(ids)).order_by(Flag.id)):
        flag_until_id = flag.id if flag_until_id is None else max(flag_until_id, flag.id)
        has_text = flag.corrected_text is not None or flag.corrected_anon_text is not None
        # the newest flag with a correction wins
        if has_text or rows[flag.reply_id].flag is None:
            rows[flag.reply_id].flag = (flag.user_id, flag.id if has_text else None)
    kept = [r for r in rows.values() if r.votes or r.flag]
    return _Selection(kept, feedback_until, flag_until_id)


def _conversation_split(conversation_id: str, eval_fraction: float, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


@dataclass(frozen=True)
class SnapshotResult:
    snapshot_id: int
    path: Path
    content_hash: str
    counts: dict[str, Any]


def build_snapshot(
    sessions: sessionmaker[Session],
    *,
    anonymizer: TextAnonymizer,
    out_dir: Path,
    clean_config: CleanConfig | None = None,
    eval_fraction: float = 0.1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> SnapshotResult | None:
    """Build the next snapshot; None when there is no new or newly judged data.

    ``progress(done, total)`` is called as texts are anonymized.
    """
    with sessions() as s:
        last = Snapshots(s).latest()
        marks = _Marks.of(last)
        selection = _select(s, marks)
        rows = selection.rows
        conv_ids = sorted({r.conversation_id for r in rows})
        texts = load_conversation_texts(s, conv_ids)
        names = participant_names(s, conv_ids)
        excluded = eval_hashes(s) if rows else set()
    if not rows:
        return None

    # texts each row needs; every conversation is anonymized up to its last needed text
    needed: set[tuple[str, int]] = set()
    for row in rows:
        needed.update({("message", row.message_id), ("reply", row.reply_id)})
        if row.flag is not None and row.flag[1] is not None:
            needed.add(("flag", row.flag[1]))
    streams: dict[int, list[ConversationText]] = {}
    for conv in conv_ids:
        items = texts[conv]
        last_needed = max((i for i, t in enumerate(items) if (t.kind, t.key) in needed), default=-1)
        streams[conv] = items[: last_needed + 1]
    total = sum(len(v) for v in streams.values())
    anon: dict[tuple[str, int], AnonText] = {}
    done = 0
    for conv in conv_ids:
        anon.update(anonymize_conversation(anonymizer, streams[conv], participants=names[conv]))
        done += len(streams[conv])
        if progress:
            progress(done, total)

    def text_of(kind: str, key: int | None) -> str:
        result = anon.get((kind, key)) if key is not None else None
        return result.text if result is not None else ""

    pii: Counter[str] = Counter()
    for key in sorted(needed):
        if key in anon:
            pii.update(anon[key].entity_types)

    examples: list[Example] = []
    users: Counter[int] = Counter()
    eval_dropped = 0
    for row in rows:
        conv = row.conversation_id
        prompt = text_of("message", row.message_id)
        answer = text_of("reply", row.reply_id)
        correction = (text_of("flag", row.flag[1]) or None) if row.flag is not None else None
        if question_hash(prompt) in excluded:
            eval_dropped += 1
            continue
        users[row.author_id] += 1
        votes = row.votes or ([(row.flag[0], -1)] if row.flag else [])
        for user_id, value in votes:
            users[user_id] += 1
            examples.append(
                Example(
                    conversation_id=str(conv),
                    user_id=str(user_id),
                    prompt=prompt,
                    answer=answer,
                    vote=value,
                    flagged=row.flag is not None,
                    correction=correction,
                    source_id=f"reply:{row.reply_id}",
                )
            )
        if row.flag is not None:
            users[row.flag[0]] += 1

    kept, report = clean(examples, config=clean_config or CleanConfig(seed=seed))
    split: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    for ex in kept:
        part = _conversation_split(ex.conversation_id, eval_fraction, seed)
        split[part].append(
            {
                "conversation": ex.conversation_id,
                "prompt": ex.prompt,
                "answer": ex.answer,
                "vote": ex.vote,
                "corrected": ex.flagged and ex.correction is not None,
                "source": ex.source_id,
            }
        )

    since = marks.message_id
    until = max(since, *(r.message_id for r in rows))
    counts: dict[str, Any] = {
        "selected_replies": len(rows),
        "reselected_replies": sum(r.reselected for r in rows),
        "eval_set_questions_excluded": eval_dropped,
        "examples": len(examples),
        "clean": report.as_dict(),
        "train": len(split["train"]),
        "eval": len(split["eval"]),
        "pii": dict(sorted(pii.items())),
    }
    watermarks = {
        "since_message_id": since,
        "until_message_id": until,
        "feedback_until": (
            selection.feedback_until.isoformat() if selection.feedback_until else None
        ),
        "flag_until_id": selection.flag_until_id,
    }
    files, content_hash = _serialize(split)

    with sessions() as s:
        duplicate = Snapshots(s).get_by_hash(content_hash)
    if duplicate is not None:
        with transaction(sessions) as s:
            store_anonymized(s, anon)
        log.info("no new content", extra={"same_as_snapshot": duplicate.id})
        return None
    path = _write(out_dir, files, content_hash, counts, watermarks, [r.message_id for r in rows])

    with transaction(sessions) as s:
        store_anonymized(s, anon)
        snap = Snapshots(s).add(
            content_hash=content_hash,
            path=str(path),
            counts=counts,
            since_message_id=since,
            until_message_id=until,
            feedback_until=selection.feedback_until,
            flag_until_id=selection.flag_until_id,
            users=dict(users),
        )
        snapshot_id = snap.id
    log.info("snapshot written", extra={"snapshot_id": snapshot_id, "train": counts["train"]})
    return SnapshotResult(snapshot_id, path, content_hash, counts)


# --------------------------------------------------------------------- files


def _serialize(split: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, bytes], str]:
    """The snapshot's files and their content hash (a function of the rows only)."""
    digest = hashlib.sha256()
    files: dict[str, bytes] = {}
    for part in ("train", "eval"):
        data = "".join(
            json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in split[part]
        ).encode("utf-8")
        files[f"{part}.jsonl"] = data
        digest.update(part.encode() + b"\0" + data)
    return files, digest.hexdigest()


def _write(
    out_dir: Path,
    files: dict[str, bytes],
    content_hash: str,
    counts: dict[str, Any],
    watermarks: dict[str, Any],
    message_ids: list[int],
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"snapshot-{watermarks['until_message_id']:08d}-{content_hash[:10]}"
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=out_dir))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        manifest = {
            "format": FORMAT,
            "content_hash": content_hash,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
            "counts": counts,
            **watermarks,
            "source_message_ids": message_ids,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for name in (*files, MANIFEST):
            (tmp / name).chmod(FILE_MODE)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final.chmod(DIR_MODE)  # immutable: files and directory read-only
    return final


def read_manifest(path: Path) -> dict[str, Any]:
    """A snapshot's manifest, verified against its files' hashes."""
    try:
        manifest: dict[str, Any] = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{path} is not a snapshot (no valid {MANIFEST}): {exc}") from exc
    for name, expected in manifest["files"].items():
        actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
        if actual != expected:
            raise SnapshotError(
                f"{path / name} does not match the manifest: the snapshot was altered"
            )
    return manifest


def read_rows(path: Path, part: str = "train") -> list[dict[str, Any]]:
    read_manifest(path)
    lines = (path / f"{part}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
