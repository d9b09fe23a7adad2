"""The one incremental detokenizer, used by the batching engine and the naive backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serving.detok import Detokenizer

TEXTS = [
    "Danke schön, zurückgesetzt! 👍 ok — fertig ✓",
    "Grüße 🙂 ok",
    "plain ascii, two  spaces and a trailing space ",
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("text", TEXTS)
def test_token_by_token_deltas_add_up_and_never_hold_half_a_character(tok: Any, text: str) -> None:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tok)
    deltas = [detok.add(i) for i in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_the_emoji_really_is_split_over_tokens(tok: Any) -> None:
    ids = tok("👍", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1
    detok = Detokenizer(tok)
    assert detok.add(ids[0]) == ""  # held back: half a character
    assert detok.add_many(ids[1:]) == "👍"


def test_add_many_equals_adding_one_at_a_time(tok: Any) -> None:
    ids = tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    one, many = Detokenizer(tok), Detokenizer(tok)
    by_one = "".join(one.add(i) for i in ids) + one.flush()
    by_chunks = "".join(many.add_many(ids[i : i + 3]) for i in range(0, len(ids), 3))
    assert by_chunks + many.flush() == by_one == TEXTS[0]


def test_flush_drops_a_trailing_incomplete_character(tok: Any) -> None:
    ids = tok("ok 👍", add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tok)
    text = "".join(detok.add(i) for i in ids[:-1]) + detok.flush()
    assert text == "ok "  # the half emoji is gone, nothing broken emitted
    assert detok.flush() == ""
