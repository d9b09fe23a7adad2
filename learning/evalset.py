"""The frozen evaluation set that maintainers curate.

Questions with their expected answers, tagged into slices (e.g. ``billing``,
``de``). They are compared against every candidate adapter and the one in
service, and they never enter a training set: the snapshot builder drops any
training example whose question matches an eval item (see ``learning.snapshot``).
Items are deduplicated by a hash of the normalized question.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from learning.errors import LearningError
from storage.models import EvalItem


class EvalSetError(LearningError, ValueError):
    """An eval item or import line is invalid."""


def normalize_question(text: str) -> str:
    """The form used to match questions: NFKC, casefolded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def question_hash(text: str) -> str:
    return hashlib.sha256(normalize_question(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: int
    duplicates: int
    errors: list[str]


def add_item(
    session: Session, *, question: str, answer: str, tags: Iterable[str] = (), actor: str
) -> EvalItem | None:
    """Add one item; returns None when the same question is already in the set."""
    question, answer = question.strip(), answer.strip()
    if not question or not answer:
        raise EvalSetError("an eval item needs a question and an expected answer")
    digest = question_hash(question)
    if session.scalar(select(EvalItem.id).filter_by(content_hash=digest)) is not None:
        return None
    item = EvalItem(
        question=question,
        expected_answer=answer,
        tags=sorted({t.strip() for t in tags if t.strip()}),
        content_hash=digest,
        created_by=actor,
    )
    session.add(item)
    session.flush()
    return item


def list_items(session: Session, *, tag: str | None = None) -> list[EvalItem]:
    items = list(session.scalars(select(EvalItem).order_by(EvalItem.id)))
    return [i for i in items if tag is None or tag in i.tags]


def import_jsonl(session: Session, lines: Iterable[str], *, actor: str) -> ImportReport:
    """Import ``{"question", "answer", "tags"?}`` lines; bad lines are reported, not fatal."""
    added = duplicates = 0
    errors: list[str] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise EvalSetError("not a JSON object")
            tags = row.get("tags", [])
            if not isinstance(tags, list):
                raise EvalSetError("tags must be a list")
            item = add_item(
                session,
                question=str(row["question"]),
                answer=str(row["answer"]),
                tags=[str(t) for t in tags],
                actor=actor,
            )
        except (json.JSONDecodeError, KeyError, EvalSetError) as exc:
            errors.append(f"line {n}: {type(exc).__name__}: {exc}")
            continue
        if item is None:
            duplicates += 1
        else:
            added += 1
    return ImportReport(added=added, duplicates=duplicates, errors=errors)


def eval_hashes(session: Session) -> frozenset[str]:
    """Hashes of every eval question (the snapshot builder excludes these)."""
    return frozenset(session.scalars(select(EvalItem.content_hash)))
