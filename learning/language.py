"""English/German guess for one message: function words and umlauts, no model.

One detector for the whole learning package: :mod:`learning.anonymize` picks the NER
pipeline and rules with :func:`detect_language` (always an answer), :mod:`learning.clean`
filters examples with :func:`guess_language` (``None`` when there is too little
evidence). Both count the same word lists, so a message is never German for one and
English for the other. What it does not know: any language but English and German.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["detect_language", "guess_language", "language_scores", "word_list"]


def word_list(block: str) -> list[str]:
    """A word list written as a text block (split at whitespace); learning's word lists use it."""
    return block.split()


_DE_WORDS = frozenset(
    word_list(
        """
        und der die das ist nicht ich du wir ihr sie es ein eine einen einem mit auf für von
        zu den dem des im am bitte danke hallo ja nein auch aber noch schon mal kannst kann
        bin bist hast habe hat wie was wo wann warum heute morgen gestern gibt geht mich mir
        dich dir uns euch sehr gut wird wurde sind war waren oder wenn dass weil hier dort
        jetzt nur meine mein deine dein wohne wohnt ruf schick schicke gerne bei nach über
        unter
        """
    )
)
_EN_WORDS = frozenset(
    word_list(
        """
        the and is are you i we they it this that with for on to of in a an be have has do
        does can will would please thanks hello hi yes no not but what where when why how
        today tomorrow me my your our there here just was were at from by call send live
        """
    )
)
_WORD_RE = re.compile(r"[^\W\d_]+")


def language_scores(text: str) -> tuple[float, float]:
    """(German, English) evidence: function words, plus umlauts for German."""
    words = [w.casefold() for w in _WORD_RE.findall(text)]
    umlauts = sum(ch in "äöüßÄÖÜ" for ch in text[:2000])
    de = sum(w in _DE_WORDS for w in words) + 1.5 * umlauts**0.5
    en = sum(w in _EN_WORDS for w in words)
    return de, en


def detect_language(text: str, languages: Sequence[str] = ("en", "de")) -> str:
    """'de' or 'en' among ``languages``; the first language on a tie or without evidence."""
    if "de" not in languages or "en" not in languages:
        return languages[0]
    de, en = language_scores(text)
    return "de" if de > en else languages[0]


def guess_language(text: str) -> str | None:
    """'en', 'de' or ``None`` when there is too little evidence (no function word)."""
    de, en = language_scores(text)
    if max(de, en) < 1:
        return None
    return "de" if de > en else "en"
