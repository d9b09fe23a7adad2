"""Training examples from snapshot rows, prompted exactly the way the bot prompts.

A snapshot row (``learning.snapshot``) is one anonymized question with one answer and
its vote (a staff correction already replaced the flagged answer and became a 👍).
This module turns rows into the three shapes the trainer consumes, each in trl's
conversational *prompt-completion* form (``prompt``: the messages before the answer,
``completion``: the assistant message), so the loss falls on the answer only:

- **SFT**: every 👍 row (good answers and staff corrections), never a 👎 answer;
- **KTO**: every row, labelled desirable (👍) or undesirable (👎), for thumbs without
  pairs;
- **DPO**: (chosen, rejected) pairs where one question has both a 👍 and a 👎 answer.

The prompt is built by a :class:`PromptBuilder`: the system prompt the bot serves
with, plus whatever context the bot puts there at reply time (the answer memory's
entries). The trainer therefore learns on the prompts it will be served with.

It knows nothing of models, the database or platforms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Message = dict[str, str]
PromptBuilder = Callable[[str], list[Message]]
"""Maps a question to the messages the bot would send before its answer."""


def plain_prompt(system_prompt: str) -> PromptBuilder:
    """The bot's prompt without retrieved context: system prompt, then the question."""

    def build(question: str) -> list[Message]:
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*msgs, {"role": "user", "content": question}]

    return build


@dataclass(frozen=True, slots=True)
class Row:
    """One judged answer from a snapshot."""

    prompt: str
    answer: str
    vote: int
    source: str = ""
    conversation: str = ""
    corrected: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        return cls(
            prompt=str(data["prompt"]),
            answer=str(data["answer"]),
            vote=int(data["vote"]),
            source=str(data.get("source", "")),
            conversation=str(data.get("conversation", "")),
            corrected=bool(data.get("corrected", False)),
        )


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def sft_examples(rows: Iterable[Row], build: PromptBuilder) -> list[dict[str, Any]]:
    """Prompt-completion examples of every 👍 row (corrections included)."""
    return [
        {"prompt": build(r.prompt), "completion": [{"role": "assistant", "content": r.answer}]}
        for r in rows
        if r.vote > 0
    ]


def kto_examples(rows: Iterable[Row], build: PromptBuilder) -> list[dict[str, Any]]:
    """Unpaired examples with a desirable/undesirable label (trl's KTO format)."""
    return [
        {
            "prompt": build(r.prompt),
            "completion": [{"role": "assistant", "content": r.answer}],
            "label": r.vote > 0,
        }
        for r in rows
        if r.vote != 0
    ]


def preference_pairs(rows: Sequence[Row]) -> list[tuple[Row, Row]]:
    """(chosen, rejected) pairs: a 👍 and a 👎 answer to the same question."""
    ups: dict[str, list[Row]] = {}
    downs: dict[str, list[Row]] = {}
    for r in rows:
        if r.vote > 0:
            ups.setdefault(_key(r.prompt), []).append(r)
        elif r.vote < 0:
            downs.setdefault(_key(r.prompt), []).append(r)
    pairs: list[tuple[Row, Row]] = []
    for key in sorted(set(ups) & set(downs)):
        for good, bad in zip(ups[key], downs[key], strict=False):
            if _key(good.answer) != _key(bad.answer):
                pairs.append((good, bad))
    return pairs


def dpo_examples(rows: Sequence[Row], build: PromptBuilder) -> list[dict[str, Any]]:
    """Paired examples (trl's conversational DPO format)."""
    return [
        {
            "prompt": build(good.prompt),
            "chosen": [{"role": "assistant", "content": good.answer}],
            "rejected": [{"role": "assistant", "content": bad.answer}],
        }
        for good, bad in preference_pairs(rows)
    ]


def counts(rows: Sequence[Row]) -> dict[str, int]:
    return {
        "rows": len(rows),
        "up": sum(r.vote > 0 for r in rows),
        "down": sum(r.vote < 0 for r in rows),
        "corrected": sum(r.corrected for r in rows),
        "pairs": len(preference_pairs(rows)),
    }


def merge_snapshots(parts: Iterable[Sequence[dict[str, Any]]]) -> list[Row]:
    """Rows of several snapshots, oldest first; a later row for a source supersedes.

    A snapshot re-selects a reply whose votes changed and carries all its current
    votes, so for a ``source`` only the newest snapshot's rows are the truth.
    """
    by_source: dict[str, list[Row]] = {}
    loose: list[Row] = []
    for part in parts:
        fresh: dict[str, list[Row]] = {}
        for data in part:
            row = Row.from_json(data)
            if row.source:
                fresh.setdefault(row.source, []).append(row)
            else:
                loose.append(row)
        by_source.update(fresh)
    return [*loose, *(r for rows in by_source.values() for r in rows)]


def write_jsonl(path: Path, items: Iterable[dict[str, Any]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
