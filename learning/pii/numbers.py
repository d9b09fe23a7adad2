"""IBANs, card numbers (checksums from python-stdnum) and phone numbers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from learning.pii.base import (
    _IBAN_LENGTHS,
    CREDIT_CARD,
    IBAN,
    PHONE,
    Hit,
    _trim_trailing_punct,
    iban_ok,
    luhn_ok,
)

_IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]{4}){2,7}(?:[ \-]?[A-Za-z0-9]{1,4})?(?![A-Za-z0-9])"  # noqa: E501
)


def find_ibans(text: str) -> list[Hit]:
    hits: list[Hit] = []
    for m in _IBAN_RE.finditer(text):
        cand = m.group()
        # the greedy match may have swallowed a trailing word group: back off group by group
        end = m.end()
        while True:
            if iban_ok(text[m.start() : end]):
                hits.append(Hit(IBAN, m.start(), end, 1.0))
                break
            cut = max(text.rfind(" ", m.start(), end), text.rfind("-", m.start(), end))
            if cut <= m.start() + 12:
                break
            end = cut
        del cand
    return hits


def iban_shaped(text: str) -> list[tuple[int, int]]:
    """Spans shaped exactly like an IBAN of a known country (right length), valid or not.

    Other finders do not look inside them: an IBAN with a wrong check digit is not an
    account number, but its digit groups are not a phone number or a postcode either.
    """
    out: list[tuple[int, int]] = []
    for m in _IBAN_RE.finditer(text):
        end = m.end()
        while True:
            compact = re.sub(r"[\s-]", "", text[m.start() : end]).upper()
            if _IBAN_LENGTHS.get(compact[:2]) == len(compact):
                out.append((m.start(), end))
                break
            cut = max(text.rfind(" ", m.start(), end), text.rfind("-", m.start(), end))
            if cut <= m.start() + 12:
                break
            end = cut
    return out


_CARD_RE = re.compile(r"(?<![\d.,+-])\d(?:[ \-]?\d){11,18}(?![\d]|[.,]\d)")
_CARD_CONTEXT = re.compile(
    r"\b(?:card|cc|credit|debit|visa|master\s?card|amex|maestro|karte|kreditkarte|ec|"
    r"card\s?number|kartennummer|kreditkartennummer|kartennr)\b",
    re.IGNORECASE,
)


def find_cards(text: str) -> list[Hit]:
    hits: list[Hit] = []
    for m in _CARD_RE.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if not 12 <= len(digits) <= 19 or len(set(digits)) < 2:
            continue
        if len(digits) == 12 and not _CARD_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]):
            continue
        if luhn_ok(digits) and digits[0] in "23456":
            hits.append(Hit(CREDIT_CARD, m.start(), m.end(), 0.95))
        elif luhn_ok(digits):
            hits.append(Hit(CREDIT_CARD, m.start(), m.end(), 0.7))
    return hits


# --------------------------------------------------------------------------- phone numbers

_PHONE_INTL_RE = re.compile(
    r"(?<![\w+])(?:\+|00)\d{1,3}(?:[ \t.\-/]?\(0\))?(?:[ \t.\-/]{0,2}\(?\d{1,5}\)?){1,7}"
    r"(?:[ \t]?(?:x|ext\.?|durchwahl)[ \t]?\d{1,5})?(?![\w])"
)
_PHONE_LOCAL_RE = re.compile(
    r"(?<![\w.+/:-])\(?\d{2,5}\)?(?:[ \t.\-/]{0,2}\(?\d{2,8}\)?){0,4}(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,5})?(?![\w]|[.:/-]\d)"  # noqa: E501
)
_PHONE_CONTEXT_RE = re.compile(
    r"\b(?:phone|phones|tel|tel\.|telephone|call|calling|mobile|mob|cell|cellphone|number|no\.|nr|nr\.|"
    r"whatsapp|signal|sms|text|txt|texting|reach|dial|fax|ring|landline|hotline|contact|"
    r"handy|handynummer|telefon|telefonnummer|nummer|rufnummer|mobil|mobilnummer|anrufen|ruf|rufe|erreichbar|"
    r"festnetz|durchwahl|unter)\b",
    re.IGNORECASE,
)
_PHONE_AFTER_RE = re.compile(
    r"[ \t]*(?:-|\(|,)?[ \t]*(?:office|mobile|mob|cell|fax|tel|phone|home|work|landline|handy|mobil|privat|büro|geschäftlich)\b",  # noqa: E501
    re.IGNORECASE,
)
_DATE_LIKE = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$|\d{1,2}:\d{2}"
)
_US_PHONE_SHAPE = re.compile(r"\(?\d{3}\)?[\s.\-]?\d{3}[\s.\-]\d{4}(?:\s?(?:x|ext\.?)\s?\d{1,5})?")
_TRUNK_SHAPE = re.compile(r"\(?0\d{1,5}\)?(?:[\s.\-/]\d{2,}){1,4}")


def find_phones(text: str) -> list[Hit]:
    if sum(ch.isdigit() for ch in text) < 6:
        return []
    hits: list[Hit] = []
    taken: list[tuple[int, int]] = []
    for m in _PHONE_INTL_RE.finditer(text):
        end = _trim_trailing_punct(text, m.start(), m.end())
        body = re.split(r"\s?(?:x|ext\.?|durchwahl)\s?\d", text[m.start() : end])[0]
        digits = sum(ch.isdigit() for ch in body)
        if 8 + 2 * body.startswith("00") <= digits <= 17:
            hits.append(Hit(PHONE, m.start(), end, 0.9))
            taken.append((m.start(), end))
    for m in _PHONE_LOCAL_RE.finditer(text):
        s, e = m.start(), m.end()
        while e > s and text[e - 1] in " .-/":
            e -= 1
        cand = text[s:e]
        if any(a < e and s < b for a, b in taken):
            continue
        digits = sum(ch.isdigit() for ch in cand)
        if not 6 <= digits <= 15 or _DATE_LIKE.match(cand):
            continue
        window = text[max(0, s - 48) : s]
        context = bool(_PHONE_CONTEXT_RE.search(window) or _PHONE_AFTER_RE.match(text, e))
        shaped = bool(_US_PHONE_SHAPE.fullmatch(cand) or _TRUNK_SHAPE.fullmatch(cand))
        if digits < 7 and not context:
            continue
        if context or (shaped and digits >= (10 if cand.lstrip("(").startswith("0") else 9)):
            hits.append(Hit(PHONE, s, e, 0.85 if context else 0.7))
        elif digits >= 8 and local_phone_valid(cand):
            hits.append(Hit(PHONE, s, e, 0.65))
    return hits


#: countries whose national formats a local number (no country code) is checked against
PHONE_REGIONS = ("DE", "AT", "CH", "GB", "IE", "US", "CA", "AU", "NZ", "FR", "NL", "BE", "IT", "ES")


def local_phone_valid(candidate: str, regions: Sequence[str] = PHONE_REGIONS) -> bool:
    """A number without a country code that ``phonenumbers`` accepts as a valid number of
    one of ``regions`` (its numbering plans: area codes, lengths, mobile prefixes)."""
    import phonenumbers

    digits = re.sub(r"[^\d+]", "", candidate)
    if not digits.startswith("0"):
        return False  # without a trunk prefix it is an order number far more often
    for region in regions:
        try:
            num = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return True
    return False
