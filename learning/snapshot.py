"""Dataset snapshots: select new feedback, anonymize, clean, split, write immutably.

``build_snapshot`` is what ``chatloop data snapshot`` (and later the learning loop)
runs:

1. **select** every bot reply to a message newer than the last snapshot that has
   a vote or a staff flag, with its question, votes, flags and the names of the
   conversation's participants;
2. **anonymize** question, answer and correction with one pseudonym map per
   conversation (``<PERSON_1>`` stays the same person inside a conversation), and
   store the anonymized text beside the raw text in the database, so retention can
   later drop the raw text; rows that were anonymized before reuse that text;
3. drop questions that are in the frozen **evaluation set** (they never train);
4. **clean** (``learning.clean``: normalization, votes, flags and corrections,
   noise, duplicates, per-user caps, balance), every drop counted by reason;
5. **split** train/eval by a hash of the conversation, so no conversation is on
   both sides;
6. **write** ``train.jsonl``, ``eval.jsonl`` and ``manifest.json`` (written last: the
   content hash, counts by stage and reason, PII counts by type, source message ids)
   into a temporary directory renamed into place, and register the snapshot with
   the users whose data it holds (an erasure taints it).

Training rows carry no platform ids and no user ids, only anonymized text. This
module knows nothing of models, training or platforms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.clean import CleanConfig, Example, clean
from learning.evalset import eval_hashes, question_hash
from storage.db import transaction
from storage.models import Feedback, Flag, Message, Reply, User, utcnow
from storage.repositories import Snapshots

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1


class SnapshotError(Exception):
    """A snapshot could not be built or read."""


class TextAnonymizer(Protocol):
    """What the snapshot needs of :class:`learning.anonymize.Anonymizer`."""

    def anonymize(
        self,
        text: str,
        *,
        conversation: Any = None,
        participants: Sequence[str] = (),
        language: str | None = None,
    ) -> Any: ...


@dataclass
class _Row:
    reply_id: int
    message_id: int
    conversation_id: int
    author_id: int
    prompt_raw: str | None
    prompt_anon: str | None
    answer_raw: str | None
    answer_anon: str | None
    votes: list[tuple[int, int, str | None]] = field(default_factory=list)  # user, value, reason
    flag: tuple[int, str | None, str | None, int] | None = None  # user, raw, anon, flag id


@dataclass(frozen=True)
class SnapshotResult:
    snapshot_id: int
    path: Path
    content_hash: str
    counts: dict[str, Any]


def _select(session: Session, since_message_id: int) -> tuple[list[_Row], dict[int, list[str]]]:
    replies = session.execute(
        select(Reply, Message)
        .join(Message, Message.id == Reply.message_id)
        .where(Message.id > since_message_id)
        .order_by(Reply.id)
    ).all()
    rows: dict[int, _Row] = {}
    for reply, message in replies:
        rows[reply.id] = _Row(
            reply_id=reply.id,
            message_id=message.id,
            conversation_id=message.conversation_id,
            author_id=message.user_id,
            prompt_raw=message.raw_text,
            prompt_anon=message.anon_text,
            answer_raw=reply.text,
            answer_anon=reply.anon_text,
        )
    if not rows:
        return [], {}
    ids = list(rows)
    for fb in session.scalars(select(Feedback).where(Feedback.reply_id.in_(ids))):
        rows[fb.reply_id].votes.append((fb.user_id, fb.value, fb.reason))
    for flag in session.scalars(select(Flag).where(Flag.reply_id.in_(ids)).order_by(Flag.id)):
        # the newest flag with a correction wins
        if flag.corrected_text or flag.corrected_anon_text or rows[flag.reply_id].flag is None:
            rows[flag.reply_id].flag = (
                flag.user_id,
                flag.corrected_text,
                flag.corrected_anon_text,
                flag.id,
            )
    conv_ids = {r.conversation_id for r in rows.values()}
    names: dict[int, list[str]] = defaultdict(list)
    people = session.execute(
        select(Message.conversation_id, User.display_name, User.external_id)
        .join(User, User.id == Message.user_id)
        .where(Message.conversation_id.in_(conv_ids))
        .distinct()
    ).all()
    for conv_id, display, external in people:
        for name in (display, external):
            if name and name not in names[conv_id]:
                names[conv_id].append(name)
    kept = [r for r in rows.values() if r.votes or r.flag]
    return kept, names


def _conversation_split(conversation_id: str, eval_fraction: float, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{conversation_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


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
    """Build the next snapshot; None when there is no new voted data."""
    from learning.anonymize import PseudonymMap

    with sessions() as s:
        last = Snapshots(s).latest()
        since = int(last.until_message_id or 0) if last else 0
        rows, names = _select(s, since)
        excluded = eval_hashes(s)
    if not rows:
        return None

    pii: Counter[str] = Counter()
    maps: dict[int, Any] = {}
    anon_updates: dict[str, dict[int, str]] = {"message": {}, "reply": {}, "flag": {}}

    def anon(kind: str, key: int, raw: str | None, done: str | None, conv: int) -> str:
        if done is not None:
            return done
        if raw is None:
            return ""
        result = anonymizer.anonymize(
            raw, conversation=maps.setdefault(conv, PseudonymMap()), participants=names[conv]
        )
        pii.update(e.type for e in result.entities)
        anon_updates[kind][key] = result.text
        return str(result.text)

    examples: list[Example] = []
    users: Counter[int] = Counter()
    eval_dropped = 0
    for i, row in enumerate(rows):
        conv = row.conversation_id
        prompt = anon("message", row.message_id, row.prompt_raw, row.prompt_anon, conv)
        answer = anon("reply", row.reply_id, row.answer_raw, row.answer_anon, conv)
        correction = None
        if row.flag is not None:
            _flagger, raw, done, flag_id = row.flag
            correction = anon("flag", flag_id, raw, done, conv) or None
        if progress:
            progress(i + 1, len(rows))
        if question_hash(prompt) in excluded:
            eval_dropped += 1
            continue
        users[row.author_id] += 1
        votes = row.votes or ([(row.flag[0], -1, None)] if row.flag else [])
        for user_id, value, _reason in votes:
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

    until = max(r.message_id for r in rows)
    counts: dict[str, Any] = {
        "selected_replies": len(rows),
        "eval_set_questions_excluded": eval_dropped,
        "examples": len(examples),
        "clean": report.as_dict(),
        "train": len(split["train"]),
        "eval": len(split["eval"]),
        "pii": dict(sorted(pii.items())),
    }
    path, content_hash = _write(out_dir, split, counts, since, until, [r.message_id for r in rows])

    with transaction(sessions) as s:
        now = utcnow()
        for model, column, updates in (
            (Message, "anon_text", anon_updates["message"]),
            (Reply, "anon_text", anon_updates["reply"]),
            (Flag, "corrected_anon_text", anon_updates["flag"]),
        ):
            for key, text in updates.items():
                obj = s.get(model, key)
                if obj is not None:
                    setattr(obj, column, text)
                    if isinstance(obj, Message):
                        obj.anonymized_at = now
        snap = Snapshots(s).add(
            content_hash=content_hash,
            path=str(path),
            counts=counts,
            since_message_id=since,
            until_message_id=until,
            users=dict(users),
        )
        snapshot_id = snap.id
    log.info("snapshot written", extra={"snapshot_id": snapshot_id, "train": counts["train"]})
    return SnapshotResult(snapshot_id, path, content_hash, counts)


def _write(
    out_dir: Path,
    split: dict[str, list[dict[str, Any]]],
    counts: dict[str, Any],
    since: int,
    until: int,
    message_ids: list[int],
) -> tuple[Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=out_dir))
    try:
        digest = hashlib.sha256()
        files = {}
        for part in ("train", "eval"):
            data = "".join(
                json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in split[part]
            )
            (tmp / f"{part}.jsonl").write_text(data, encoding="utf-8")
            digest.update(part.encode() + b"\0" + data.encode("utf-8"))
            files[f"{part}.jsonl"] = hashlib.sha256(data.encode("utf-8")).hexdigest()
        content_hash = digest.hexdigest()
        manifest = {
            "format": FORMAT,
            "content_hash": content_hash,
            "files": files,
            "counts": counts,
            "since_message_id": since,
            "until_message_id": until,
            "source_message_ids": message_ids,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        final = out_dir / f"snapshot-{until:08d}-{content_hash[:10]}"
        if final.exists():
            shutil.rmtree(tmp)
            return final, content_hash
        tmp.chmod(0o755)
        os.replace(tmp, final)
        return final, content_hash
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
