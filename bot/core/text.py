"""Sanitizing incoming text before it is stored or sent to the model.

Chat text arrives in every state: invalid UTF-8 (bytes from a terminal pipe),
lone surrogates, NUL bytes (PostgreSQL refuses them in text columns), terminal
escape sequences and other control characters. :func:`sanitize` keeps every
printable character, newline and tab, replaces undecodable bytes with U+FFFD, and
drops the rest; it never raises.
"""

from __future__ import annotations

import re
import unicodedata

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_KEEP = {"\n", "\t"}


def decode(data: bytes) -> str:
    """Bytes from the outside world as text; invalid UTF-8 becomes U+FFFD."""
    return data.decode("utf-8", errors="replace")


def sanitize(text: str) -> str:
    """Printable text with normalized newlines and no control characters."""
    # lone surrogates (e.g. from surrogateescape) cannot be stored as UTF-8
    text = text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
    text = _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    out = [
        ch
        for ch in text
        if ch in _KEEP or not unicodedata.category(ch).startswith("C") or ch == "\u200d"
    ]
    return "".join(out).strip()
