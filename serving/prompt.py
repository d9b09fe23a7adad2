"""Prompt building: chat template plus context budget.

Turns a conversation (system prompt first, then alternating user/assistant turns)
into the token ids the model sees, using the tokenizer's own chat template. When
the conversation does not fit ``max_context_tokens - max_new_tokens``, the oldest
turns are dropped first (the system prompt and the last user turn are kept); if
even those do not fit, :class:`~serving.errors.PromptTooLong` is raised rather than
silently cutting the question.

It also owns how approved answers from the answer memory enter a prompt:
:func:`build_messages` is the one function that turns (system prompt, history,
question, memory items) into the conversation, called by the bot at reply time and
by the learning loop to build training examples exactly as the bot prompts;
:func:`fit_memory` keeps the memory block within its token budget.

It knows nothing of where the turns come from (database, platform) or of adapters.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

from serving.errors import PromptTooLong
from serving.types import ChatMessage, MemoryItem

_FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def render(tokenizer: Any, messages: Sequence[ChatMessage]) -> str:
    """The prompt text for ``messages`` with the generation prompt appended."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    template = None if getattr(tokenizer, "chat_template", None) else _FALLBACK_TEMPLATE
    text = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=False, chat_template=template
    )
    return str(text)


def encode(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(i) for i in ids]


def build_prompt_ids(
    tokenizer: Any, messages: Sequence[ChatMessage], *, max_prompt_tokens: int
) -> tuple[list[int], int]:
    """Token ids of the prompt and how many old turns were dropped to fit.

    ``messages`` may start with one system message; the last message must be the
    user's. Turns are dropped oldest first, in whole user/assistant pairs, so the
    remaining history still starts with a user turn.
    """
    if not messages or messages[-1].role != "user":
        raise ValueError("the last message of a prompt must be the user's")
    system = [m for m in messages[:1] if m.role == "system"]
    turns = list(messages[len(system) :])
    dropped = 0
    while True:
        ids = encode(tokenizer, render(tokenizer, [*system, *turns]))
        if len(ids) <= max_prompt_tokens:
            return ids, dropped
        if len(turns) <= 1:
            raise PromptTooLong(
                f"the prompt needs {len(ids)} tokens but only {max_prompt_tokens} fit the context"
            )
        # drop the oldest turn, then any assistant turn left dangling at the front
        turns.pop(0)
        dropped += 1
        while len(turns) > 1 and turns[0].role != "user":
            turns.pop(0)
            dropped += 1


MEMORY_HEADER = (
    "Approved answers from the answer memory. If one of them answers the user's "
    "question, answer with it; if none fits, ignore them."
)


def approx_tokens(text: str) -> int:
    """A conservative token estimate without a tokenizer (~3 UTF-8 bytes per token;
    BPE tokenizers of chat models average 4+ on English)."""
    return len(text.encode("utf-8")) // 3 + 1


def tokenizer_counter(tokenizer: Any) -> Callable[[str], int]:
    """Exact token counts with a private copy of ``tokenizer`` (a fast tokenizer shared
    with an engine's worker thread must not be used from other threads at once)."""
    own = copy.deepcopy(tokenizer)
    lock = threading.Lock()

    def count(text: str) -> int:
        with lock:
            return len(encode(own, text))

    return count


def memory_block(items: Sequence[MemoryItem]) -> str:
    """The text that carries ``items`` in the system message ("" for none)."""
    if not items:
        return ""
    lines = [MEMORY_HEADER]
    for n, item in enumerate(items, 1):
        lines.append(f"[{n}] Question: {item.question}\nAnswer: {item.answer}")
    return "\n".join(lines)


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[ChatMessage],
    question: str,
    memory: Sequence[MemoryItem] = (),
) -> tuple[ChatMessage, ...]:
    """The conversation a backend renders: system message (with the memory block
    appended when there are items), the history turns, then the user's question.

    The bot calls this at reply time and the learning loop to build its training
    examples, so both prompt alike.
    """
    system = system_prompt
    block = memory_block(memory)
    if block:
        system = f"{system_prompt}\n\n{block}" if system_prompt else block
    return (ChatMessage("system", system), *history, ChatMessage("user", question))


def fit_memory(
    items: Sequence[MemoryItem],
    *,
    max_tokens: int,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> tuple[MemoryItem, ...]:
    """The leading ``items`` (best first) whose :func:`memory_block` fits ``max_tokens``.

    Entries are kept whole: one that does not fit is skipped (a cut answer could be
    wrong) and a shorter, lower-ranked one may still fit.
    """
    kept: list[MemoryItem] = []
    for item in items:
        if count_tokens(memory_block([*kept, item])) <= max_tokens:
            kept.append(item)
    return tuple(kept)
