"""Splitting a reply into Discord messages of at most 2,000 characters.

Discord refuses message content longer than 2,000 characters. :func:`split_message`
cuts a long reply into parts at the best boundary that fits — a paragraph break,
then a line break, then the end of a sentence, then any whitespace — and only cuts
inside a word when a single "word" (a long URL, a base64 blob) is longer than a
whole message. A part that ends inside a ````` code fence is closed with ```` ``` ````
and the next part reopens the fence with the same language tag, so every part
renders on its own.

Length is counted in UTF-16 code units (what Discord's clients count), which is
never less than Python's code-point count, so emoji-heavy text stays under the
limit too.

The split is *prefix-stable*: once the text is longer than one message, the first
part depends only on the first 2,000 characters. The streaming sink relies on this
to freeze earlier parts while later tokens still arrive.

It knows nothing of Discord objects; it is plain text in, text out.
"""

from __future__ import annotations

import re

MESSAGE_LIMIT = 2000
FENCE = "```"
_FENCE_OPEN = re.compile(r"```([\w+#.-]*)[ \t]*\n")
_SENTENCE_END = re.compile(r"[.!?…][)\]\"'»”’]*\s")


def utf16_len(text: str) -> int:
    """Length as Discord counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def open_fence(text: str) -> str | None:
    """The opener (e.g. ```` ```python ````) of a code fence still open at the end of ``text``."""
    opener: str | None = None
    pos = 0
    while (i := text.find(FENCE, pos)) != -1:
        if opener is None:
            m = _FENCE_OPEN.match(text, i)
            language = m.group(1) if m and len(m.group(1)) <= 20 else ""
            opener = FENCE + language
        else:
            opener = None
        pos = i + len(FENCE)
    return opener


def _best_cut(text: str, budget: int, start: int) -> int:
    """Index to cut ``text`` at so that ``text[:cut]`` has at most ``budget`` characters."""
    window = text[: budget + 1]  # one more: a boundary right after the budget counts
    half = start + max(1, (budget - start) // 2)
    para = window.rfind("\n\n", start, budget + 1)
    if para >= half:
        return para
    line = window.rfind("\n", start, budget + 1)
    if line >= half:
        return line
    sentence = -1
    for m in _SENTENCE_END.finditer(window, start):
        if m.end() - 1 <= budget:
            sentence = m.end() - 1
    if sentence >= half:
        return sentence
    space = max(window.rfind(" ", start, budget + 1), window.rfind("\t", start, budget + 1))
    space = max(space, line, para)
    if space > start:
        return space
    return budget  # one "word" longer than a message: no boundary to respect


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` as parts of at most ``limit`` UTF-16 units each (no empty parts)."""
    if limit < 40:
        raise ValueError("limit too small to split sensibly")
    parts: list[str] = []
    prefix = ""  # a code fence reopened from the previous part
    rest = text.strip()
    while rest:
        body = prefix + rest
        if utf16_len(body) <= limit:
            parts.append(body)
            break
        budget = limit
        while True:
            cut = _best_cut(body, budget, start=len(prefix))
            head = body[:cut].rstrip()
            opener = open_fence(head)
            closing = ("" if head.endswith("\n") else "\n") + FENCE if opener else ""
            size = utf16_len(head + closing)
            if size <= limit or budget <= len(prefix) + 1:
                break
            budget -= size - limit
        if head.strip() and head != prefix.rstrip():
            parts.append(head + closing)
        rest = body[cut:]
        # drop the boundary itself; keep indentation inside code
        rest = rest.lstrip("\n") if opener else rest.lstrip()
        prefix = opener + "\n" if opener else ""
    return parts
