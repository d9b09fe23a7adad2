"""Retrieval-aware training examples: the right entry among distractors, no-match cases,
chat-style variants, the bot's prompt format and budget."""

from __future__ import annotations

import json
import random
from pathlib import Path

from learning.examples import Row
from learning.ragdata import Pair, PairIndex, chat_variants, rag_examples, served_builder
from serving.embed import HashingEmbedder
from serving.prompt import MEMORY_HEADER, approx_tokens

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "faq_dev_en.jsonl"


def _faq() -> list[dict[str, object]]:
    if SHARED.exists():
        return [json.loads(line) for line in SHARED.read_text(encoding="utf-8").splitlines()][:12]
    return [
        {
            "question": f"How do I change setting {i}?",
            "answer": f"Open Settings and pick option {i}.",
        }
        for i in range(12)
    ]


def _index() -> tuple[PairIndex, list[Pair]]:
    pairs = [Pair(str(f["question"]), str(f["answer"]), i + 1) for i, f in enumerate(_faq())]
    return PairIndex(pairs, HashingEmbedder(256).embed), pairs


def test_examples_carry_the_right_entry_among_distractors_and_no_match_cases() -> None:
    index, pairs = _index()
    rows = [Row(prompt=p.question, answer=p.answer, vote=1) for p in pairs[:6]]
    rows.append(Row(prompt="bad answer", answer="nope", vote=-1))
    general = [("How are you today?", "I am fine, thanks."), ("Tell me a joke.", "Why not.")]
    examples = rag_examples(
        rows, index, system_prompt="Be brief.", top_k=3, variants=2, general=general
    )
    by_target: dict[str, list[dict[str, object]]] = {}
    for ex in examples:
        by_target.setdefault(ex["completion"][0]["content"], []).append(ex)
    assert "nope" not in by_target  # a 👎 answer is never a target
    positions = set()
    for p in pairs[:6]:
        group = by_target[p.answer]
        assert len(group) == 3  # the question and two chat-style variants
        for ex in group:
            system = ex["prompt"][0]["content"]
            assert system.startswith("Be brief.") and MEMORY_HEADER in system
            blocks = system.split("[")[1:]
            assert len(blocks) == 3  # the right entry and two distractors
            assert sum(p.answer in b for b in blocks) == 1
            positions.add(next(i for i, b in enumerate(blocks) if p.answer in b))
    assert len(positions) > 1  # the right entry is not always first
    for question, answer in general:  # no-match: only distractors, target its own answer
        (ex,) = by_target[answer]
        assert ex["prompt"][-1] == {"role": "user", "content": question}
        assert all(p.answer != answer for p in pairs)
        assert MEMORY_HEADER in ex["prompt"][0]["content"]


def test_the_served_builder_keeps_the_threshold_and_the_budget() -> None:
    index, pairs = _index()
    strict = served_builder(index, system_prompt="S", top_k=3, min_score=1.01, max_tokens=384)
    assert strict(pairs[0].question) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": pairs[0].question},
    ]
    tight = served_builder(index, system_prompt="S", top_k=3, min_score=-1.0, max_tokens=80)
    system = tight(pairs[0].question)[0]["content"]
    assert approx_tokens(system.removeprefix("S").strip()) <= 80
    roomy = served_builder(index, system_prompt="S", top_k=3, min_score=-1.0, max_tokens=2000)
    assert pairs[0].answer in roomy(pairs[0].question)[0]["content"]


def test_chat_variants_differ_from_the_question() -> None:
    rng = random.Random(0)
    q = "How do I reset my password?"
    variants = chat_variants(q, rng, 3)
    assert len(variants) == 3 and len(set(variants)) == 3 and q not in variants
