"""Chat-only name shapes: contact-card name lines, truecasing lowercase chat, participants."""

from __future__ import annotations

import re
from collections.abc import Sequence

from learning.language import word_list
from learning.pii.base import ADDRESS, EMAIL, PERSON, PHONE, Hit
from learning.pii.lexicon import _DENY, _TOKEN_RE, NameLexicon, stop_words, zipf

_FIRST_LINE_RE = re.compile(r"\A[\s?•·*>\-–{}|]*([^\n]{3,60}?)[ \t]*(?:\n|\Z)")


_LINE_LABEL = re.compile(r"([A-Za-zÄÖÜäöü][\w ]{0,24}):[ \t]*")
_NAME_LABELS = frozenset(
    word_list(
        """
        name full name last name first name by from to contact customer user client attn
        attention recipient sender author owner assignee reporter cc kontakt kunde empfänger
        absender ansprechpartner verfasser
        """
    )
)


def signature_names(
    text: str, hits: Sequence[Hit], lexicon: NameLexicon | None = None
) -> list[Hit]:
    """Name lines of contact cards, signatures and forms.

    A line that is just 2-4 name-like words (after bullets and an optional ``Label:``)
    is a name when the message has e-mail/phone/address data below it
    (``"Rumisa Kadiev\\nMeter reader\\nPhone: 403-738-7931"``), or when its label is a
    name label (``"Billing address: Tokie Ogawa"``, ``"Name: Oline Lyberth"``) and one of
    the words is a known or a rare (non-dictionary) word.
    """
    sw = stop_words()
    lowercase = is_lowercase_chat(text)
    out: list[Hit] = []
    pos = 0
    for line in text.split("\n"):
        line_start = pos
        pos += len(line) + 1
        stripped = line.lstrip(" \t?•·*>-–{}|")
        offset = line_start + len(line) - len(stripped)
        label = _LINE_LABEL.match(stripped)
        label_text = label.group(1).strip().casefold() if label else ""
        if label:
            offset += label.end()
            stripped = stripped[label.end() :]
        body = stripped.rstrip(" \t.,;")
        if not body:
            continue
        start, end = offset, offset + len(body)
        tokens = body.split()
        if not 2 <= len(tokens) <= 4 or any(
            h.type != PERSON and h.start < end and start < h.end for h in hits
        ):
            continue
        ok = True
        for w in tokens:
            core = w.rstrip(".")
            low = core.casefold()
            if (
                not core.replace("-", "").replace("'", "").isalpha()
                or low in sw
                or low in _DENY
                or (not lowercase and not core[0].isupper())
            ):
                ok = False
        if not ok or sum(zipf(w.casefold().rstrip(".")) >= 4.0 for w in tokens) > 1:
            continue  # "Meter reader", "Personal Info" are words
        contact_below = any(h.type in {EMAIL, PHONE, ADDRESS} and h.start >= end for h in hits)
        named = label_text in _NAME_LABELS and any(
            zipf(w.casefold().rstrip(".")) < 2.5
            or (lexicon is not None and w.casefold() in lexicon.first)
            for w in tokens
        )
        if (contact_below and (label is None or label_text in _NAME_LABELS)) or named:
            out.append(Hit(PERSON, start, end, 0.7))
    return out


_PASTED_RE = re.compile(r"<@[^>\s]{1,40}>|\b[a-z][a-z0-9+.-]{1,9}://\S+|\S*\d\S*", re.IGNORECASE)


def is_lowercase_chat(text: str) -> bool:
    """True for messages written (almost) without capital letters.

    Pasted values (platform mentions, links, tokens with digits such as keys or IBANs) keep
    their case in lowercase chat and are not counted.
    """
    typed = _PASTED_RE.sub(" ", text) if any(ch.isupper() for ch in text) else text
    letters = sum(ch.isalpha() for ch in typed)
    upper = sum(ch.isupper() for ch in typed)
    return letters >= 4 and upper <= max(1, letters // 100)


def truecase(text: str, lexicon: NameLexicon) -> str:
    """Capitalise the words of a lowercase message that could be names (same length).

    Candidates: words in the name lexicon that are not ambiguous, and rare words
    (wordfreq Zipf < 2.5) that are not stop words. The NER model then sees "kadiev began
    writing" as "Kadiev began writing".
    """
    out = list(text)
    sw = stop_words()
    for m in _TOKEN_RE.finditer(text):
        word = m.group().rstrip(".")
        low = word.casefold()
        if len(low) < 2 or low in sw or low in _DENY or not word.isalpha():
            continue
        named = (low in lexicon.first or low in lexicon.last) and low not in lexicon.ambiguous
        if named or zipf(low) < 2.5:
            up = word[0].upper()
            if len(up) == 1:
                out[m.start()] = up
    return "".join(out)


# --------------------------------------------------------------------------- participants


def participant_patterns(participants: Sequence[str]) -> list[re.Pattern[str]]:
    """Case-insensitive patterns for the conversation's own participants.

    Each participant matches as the full name, as any of its name parts (first-name-only
    mentions) of 3+ letters that is not a stop word, and as its raw handle.
    """
    sw = stop_words()
    alts: set[str] = set()
    for raw in participants:
        raw = raw.strip().lstrip("@")
        if not raw:
            continue
        alts.add(raw)
        parts = [p for p in re.split(r"[\s._\-]+", raw) if p]
        if len(parts) > 1:
            alts.add(" ".join(parts))
        for p in parts:
            if len(p) >= 3 and p.casefold() not in sw and p.isalpha():
                alts.add(p)
    if not alts:
        return []
    body = "|".join(re.escape(a) for a in sorted(alts, key=len, reverse=True))
    return [re.compile(rf"(?<![\w@])@?(?:{body})(?![\w])", re.IGNORECASE)]
