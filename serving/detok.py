"""Incremental detokenization shared by every local backend.

Both the batching engine and the naive baseline stream a reply as it is generated;
:class:`Detokenizer` turns one token id at a time into text deltas and never
emits half of a multi-byte character.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Detokenizer:
    """Incremental detokenization that never emits half a character.

    Decodes a small window ``ids[prefix:]`` and emits the part past
    ``decode(ids[prefix:read])`` once it does not end with U+FFFD (the
    replacement character of an incomplete UTF-8 sequence). The window keeps
    context for tokenizers that drop a leading space when decoding mid-text, and
    keeps the cost per token constant (no decode of the whole reply per token).
    The concatenated deltas plus :meth:`flush` equal ``decode(ids)`` without a
    trailing incomplete character.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    def _pending(self) -> tuple[str, str]:
        before = self._decode(self.ids[self.prefix : self.read]) if self.read > self.prefix else ""
        return before, self._decode(self.ids[self.prefix :])

    def add(self, token_id: int) -> str:
        """Take one token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        before, now = self._pending()
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return now[len(before) :]
        return ""

    def add_many(self, token_ids: Iterable[int]) -> str:
        """Take several tokens; return the text they complete."""
        return "".join(self.add(int(t)) for t in token_ids)

    def flush(self) -> str:
        """Whatever is still held back; a trailing incomplete character is dropped."""
        if self.read >= len(self.ids):
            return ""
        before, now = self._pending()
        self.prefix = self.read = len(self.ids)
        return now[len(before) :].rstrip("\ufffd") if len(now) > len(before) else ""
