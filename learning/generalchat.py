"""A held-out general-chat set: the forgetting check of the evaluator.

Pairs of consecutive turns from ``chatterbot-corpus`` (a PyPI package of YAML
conversations, BSD-3), read from the installed package, never downloaded. A pair
belongs to the held-out half when a hash of its question says so; nothing in the
learning loop trains on that half (the cold-start data uses the other half), so a
rise of a candidate's loss on it measures forgetting of ordinary chat.
"""

from __future__ import annotations

import hashlib
import itertools
from importlib import resources
from typing import Any

from learning.errors import LearningError


def is_held_out(question: str) -> bool:
    """Whether a question belongs to the held-out half (never trained on)."""
    return hashlib.sha256(question.strip().casefold().encode()).digest()[0] % 2 == 0


def chatterbot_pairs(language: str = "english") -> list[tuple[str, str]]:
    """Every (turn, next turn) pair of one language's conversations, deduplicated."""
    import yaml

    try:
        root = resources.files("chatterbot_corpus") / "data" / language
    except ModuleNotFoundError as exc:
        raise LearningError(
            "chatterbot-corpus is not installed (pip install chatterbot-corpus)"
        ) from exc
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".yml"):
            continue
        data = yaml.safe_load(item.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            turns = [str(t).strip() for t in conv if isinstance(t, str | int | float)]
            for q, a in itertools.pairwise(turns):
                key = (q.casefold(), a.casefold())
                if q and a and key not in seen:
                    seen.add(key)
                    pairs.append((q, a))
    return pairs


def general_chat_set(
    system_prompt: str, *, held_out: bool = True, limit: int = 64, language: str = "english"
) -> list[dict[str, Any]]:
    """Prompt-completion examples of one half of the corpus (the held-out half by default)."""
    rows = [(q, a) for q, a in chatterbot_pairs(language) if is_held_out(q) == held_out]
    rows.sort(key=lambda qa: hashlib.sha256(qa[0].encode()).hexdigest())
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [
        {
            "prompt": [*system, {"role": "user", "content": q}],
            "completion": [{"role": "assistant", "content": a}],
        }
        for q, a in rows[:limit]
    ]


def training_pairs(n: int, language: str = "english") -> list[tuple[str, str]]:
    """``n`` (question, answer) pairs of the half that is *not* held out (for training)."""
    return [qa for qa in chatterbot_pairs(language) if not is_held_out(qa[0])][:n]
