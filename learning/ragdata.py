"""Retrieval-aware training examples: teach the adapter to *use* the answer memory.

A small model given the right approved answer in its prompt still ignores it unless
it was trained to use it (issue 12's measurement: 2% correct with retrieval alone).
So the trainer's examples are built the way the bot prompts at reply time, through
:func:`serving.prompt.build_messages` and :func:`serving.prompt.fit_memory`, with:

- **the right entry among distractors**: for a question whose answer is in the memory,
  the prompt carries that entry and the nearest other entries, the right one at a
  random position (so position is no cue), and the target is the approved answer;
- **no-match cases**: questions with no entry that fits get only distractors, and the
  target is their own (👍 or general-chat) answer, so the adapter learns not to copy a
  wrong entry;
- **paraphrase augmentation**: chat-style variants of each memory question
  (lowercased, without punctuation, a dropped word, a typo), because customers do not
  type the stored wording.

:class:`PairIndex` is the in-process retrieval over (question, answer) pairs with the
same embedder the bot uses. It knows nothing of the database or the bot.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from learning.examples import Message, PromptBuilder, Row
from serving.memory import entry_text
from serving.prompt import approx_tokens, build_messages, fit_memory
from serving.types import MemoryItem


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


@dataclass(frozen=True, slots=True)
class Pair:
    question: str
    answer: str
    entry_id: int = 0


class PairIndex:
    """Cosine retrieval over approved pairs, each embedded as the memory embeds an entry
    (question and answer together). The served memory adds a BM25 term to the score;
    this index does not, so its threshold is a cosine one."""

    def __init__(self, pairs: Sequence[Pair], embed: Callable[[Sequence[str]], Any]) -> None:
        self.pairs = list(pairs)
        self._embed = embed
        self._matrix = (
            np.asarray(embed([entry_text(p.question, p.answer) for p in self.pairs]), np.float32)
            if self.pairs
            else np.zeros((0, 1), dtype=np.float32)
        )
        self._by_answer = {_norm(p.answer): i for i, p in enumerate(self.pairs)}
        self._by_question = {_norm(p.question): i for i, p in enumerate(self.pairs)}

    def search(self, question: str, k: int) -> list[tuple[int, float]]:
        if not self.pairs:
            return []
        q = np.asarray(self._embed([question]), dtype=np.float32)[0]
        scores = self._matrix @ q
        order = np.argsort(-scores)[:k]
        return [(int(i), float(scores[i])) for i in order]

    def right_entry(self, question: str, answer: str) -> int | None:
        """The pair that answers this row: same answer, else same question."""
        hit = self._by_answer.get(_norm(answer))
        return hit if hit is not None else self._by_question.get(_norm(question))

    def item(self, i: int, score: float = 0.0) -> MemoryItem:
        p = self.pairs[i]
        return MemoryItem(entry_id=p.entry_id, question=p.question, answer=p.answer, score=score)


def served_builder(
    index: PairIndex,
    *,
    system_prompt: str,
    top_k: int,
    min_score: float,
    max_tokens: int,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> PromptBuilder:
    """Prompts as the bot builds them at reply time: top-k over the threshold, in budget."""

    def build(question: str) -> list[Message]:
        hits = [(i, s) for i, s in index.search(question, top_k) if s >= min_score]
        items = fit_memory(
            [index.item(i, s) for i, s in hits], max_tokens=max_tokens, count_tokens=count_tokens
        )
        return _as_dicts(system_prompt, question, items)

    return build


def _as_dicts(system_prompt: str, question: str, items: Sequence[MemoryItem]) -> list[Message]:
    msgs = build_messages(system_prompt=system_prompt, history=(), question=question, memory=items)
    return [{"role": m.role, "content": m.content} for m in msgs if m.content or m.role != "system"]


def chat_variants(question: str, rng: random.Random, n: int) -> list[str]:
    """``n`` chat-style variants of a question (distinct from it and each other)."""
    words = question.split()
    out: list[str] = []
    makers: list[Callable[[], str]] = [
        lambda: re.sub(r"[^\w\s]", "", question).lower(),
        lambda: " ".join(w for j, w in enumerate(words) if j != rng.randrange(len(words))).lower(),
        lambda: _typo(question.lower(), rng),
        lambda: "hi, " + question[0].lower() + question[1:],
    ]
    rng.shuffle(makers)
    for make in makers:
        if len(out) >= n:
            break
        text = make().strip()
        if text and text != question and text not in out:
            out.append(text)
    return out


def _typo(text: str, rng: random.Random) -> str:
    letters = [i for i in range(len(text) - 1) if text[i].isalpha() and text[i + 1].isalpha()]
    if not letters:
        return text
    i = rng.choice(letters)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def rag_examples(
    rows: Sequence[Row],
    index: PairIndex,
    *,
    system_prompt: str,
    top_k: int = 3,
    max_tokens: int = 384,
    variants: int = 2,
    general: Sequence[tuple[str, str]] = (),
    seed: int = 0,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> list[dict[str, Any]]:
    """SFT examples (prompt-completion) with the memory in the prompt; see module doc.

    ``rows``: the snapshot's 👍 rows; ``general``: (question, answer) chat pairs with no
    entry in the memory, used as no-match examples.
    """
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []

    def example(question: str, answer: str, right: int | None) -> dict[str, Any]:
        near = [i for i, _ in index.search(question, top_k + 2) if i != right]
        chosen = near[: top_k - (1 if right is not None else 0)]
        if right is not None:
            chosen.insert(rng.randrange(len(chosen) + 1), right)
        items = fit_memory(
            [index.item(i) for i in chosen], max_tokens=max_tokens, count_tokens=count_tokens
        )
        if right is not None and not any(it.answer == index.pairs[right].answer for it in items):
            items = (index.item(right),)  # the right entry alone always fits the budget
        return {
            "prompt": _as_dicts(system_prompt, question, items),
            "completion": [{"role": "assistant", "content": answer}],
        }

    for r in rows:
        if r.vote <= 0:
            continue
        right = index.right_entry(r.prompt, r.answer)
        out.append(example(r.prompt, r.answer, right))
        if right is not None:
            for v in chat_variants(r.prompt, rng, variants):
                out.append(example(v, r.answer, right))
    for question, answer in general:
        if index.right_entry(question, answer) is None:
            out.append(example(question, answer, None))
    rng.shuffle(out)
    return out


def rows_from_pairs(pairs: Sequence[Pair]) -> list[Row]:
    """Every memory entry as a 👍 row (the memory's own questions are training data)."""
    return [
        Row(prompt=p.question, answer=p.answer, vote=1, source=f"memory:{p.entry_id}")
        for p in pairs
    ]
