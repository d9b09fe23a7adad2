"""Prompt building with the chat template and the context budget."""

from __future__ import annotations

from typing import Any

import pytest

from serving.errors import PromptTooLong
from serving.prompt import build_prompt_ids, render
from serving.types import ChatMessage, GenerationParams

SYSTEM = ChatMessage("system", "Be brief.")


def _conversation(n: int) -> list[ChatMessage]:
    msgs = [SYSTEM]
    for i in range(n):
        msgs += [
            ChatMessage("user", f"question {i} " * 3),
            ChatMessage("assistant", f"answer {i} " * 3),
        ]
    return [*msgs, ChatMessage("user", "final question")]


def test_uses_the_models_chat_template(tiny_loaded: Any) -> None:
    text = render(tiny_loaded.tokenizer, [SYSTEM, ChatMessage("user", "hi")])
    assert (
        text == "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_fits_without_dropping(tiny_loaded: Any) -> None:
    ids, dropped = build_prompt_ids(tiny_loaded.tokenizer, _conversation(2), max_prompt_tokens=4096)
    assert dropped == 0
    assert "question 0" in tiny_loaded.tokenizer.decode(ids)


def test_drops_oldest_turns_keeps_system_and_question(tiny_loaded: Any) -> None:
    tok = tiny_loaded.tokenizer
    full, _ = build_prompt_ids(tok, _conversation(6), max_prompt_tokens=100_000)
    ids, dropped = build_prompt_ids(tok, _conversation(6), max_prompt_tokens=len(full) // 2)
    text = tok.decode(ids)
    assert len(ids) <= len(full) // 2 and dropped >= 2 and dropped % 2 == 0
    assert text.startswith("<|im_start|>system\nBe brief.")
    assert "question 0" not in text and "question 5" in text and text.rstrip().endswith("assistant")
    assert "final question" in text
    # the remaining history starts with a user turn
    assert text.split("<|im_end|>\n")[1].startswith("<|im_start|>user")


def test_too_long_even_alone(tiny_loaded: Any) -> None:
    msgs = [SYSTEM, ChatMessage("user", "word " * 500)]
    with pytest.raises(PromptTooLong, match="only 50 fit"):
        build_prompt_ids(tiny_loaded.tokenizer, msgs, max_prompt_tokens=50)


def test_last_message_must_be_the_users(tiny_loaded: Any) -> None:
    with pytest.raises(ValueError, match="last message"):
        build_prompt_ids(tiny_loaded.tokenizer, [SYSTEM], max_prompt_tokens=100)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 100, "max_context_tokens": 100}, "larger"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"timeout_s": 0}, "timeout"),
    ],
)
def test_generation_params_validate(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerationParams(**kwargs)
