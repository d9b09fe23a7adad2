"""Dates of birth: numeric, ISO and written-out dates, English and German.

A date counts as a date of birth when a birth cue stands shortly before it ("born",
"DOB", "birthday", "geboren", "geb.", "Geburtsdatum", "Jahrgang") or, without a cue,
when it is a full date (day, month, year) whose year lies between 1920 and 2010: in
chat with a support bot such a date is a birth date far more often than anything else.
Dates of this or recent years (deadlines, log lines, releases) are kept.
"""

from __future__ import annotations

import re

from learning.pii.base import DATE_OF_BIRTH, Hit

_MONTHS_EN = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_MONTHS_DE = (
    "januar|jänner|februar|märz|maerz|april|mai|juni|juli|august|september|oktober|"
    "november|dezember|jän|mär|okt|dez"
)
_MONTH = rf"(?:{_MONTHS_EN}|{_MONTHS_DE})\.?"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_NUM_MONTH = r"(?:0?[1-9]|1[0-2])"
_YEAR = r"(?:19\d\d|20\d\d)"
_YEAR2 = r"(?:'?\d\d)"

_DATE_RE = re.compile(
    "|".join(
        (
            rf"\b{_YEAR}-{_NUM_MONTH}-{_DAY}\b",  # ISO 1987-03-14
            rf"\b{_DAY}[./-]{_NUM_MONTH}[./-](?:{_YEAR}|\d\d)\b",  # 14.03.1987, 14/3/87
            rf"\b{_NUM_MONTH}/{_DAY}/(?:{_YEAR}|\d\d)\b",  # US 3/14/1987
            rf"\b{_DAY}(?:st|nd|rd|th|\.)?(?:\s+of)?\s+{_MONTH}(?:,?\s+(?:{_YEAR}|{_YEAR2}))?\b",
            rf"\b{_MONTH}\s+{_DAY}(?:st|nd|rd|th)?(?:,?\s+(?:{_YEAR}|{_YEAR2}))?\b",
        )
    ),
    re.IGNORECASE,
)
_YEAR_ONLY_RE = re.compile(rf"\b{_YEAR}\b")
_BIRTH_CUE = re.compile(
    r"\b(?:born|birth|birthday|bday|b-day|dob|d\.o\.b|date\s+of\s+birth|birthdate|"
    r"geboren|geb|geburtstag|geburtsdatum|geburtsjahr|jahrgang|bin\s+vom|"
    r"my\s+age|years?\s+old\s+since)\b\.?",
    re.IGNORECASE,
)
_FULL_YEAR = re.compile(r"(?:19|20)\d\d")


def _year(value: str) -> int | None:
    m = _FULL_YEAR.search(value)
    return int(m.group()) if m else None


def find_dates_of_birth(text: str) -> list[Hit]:
    """Dates of birth in ``text`` (see the module docstring)."""
    if not any(ch.isdigit() for ch in text):
        return []
    hits: list[Hit] = []
    for m in _DATE_RE.finditer(text):
        value = m.group()
        window = text[max(0, m.start() - 45) : m.start()]
        cue = bool(_BIRTH_CUE.search(window))
        year = _year(value)
        has_day_month_year = year is not None or re.search(r"[./-]\d\d$", value) is not None
        if cue and (year is None or 1900 <= year <= 2030):
            hits.append(Hit(DATE_OF_BIRTH, m.start(), m.end(), 0.9))
        elif year is not None and 1920 <= year <= 2010 and has_day_month_year:
            hits.append(Hit(DATE_OF_BIRTH, m.start(), m.end(), 0.6))
    for m in _YEAR_ONLY_RE.finditer(text):
        if any(h.start <= m.start() < h.end for h in hits):
            continue
        window = text[max(0, m.start() - 25) : m.start()]
        if _BIRTH_CUE.search(window) and 1900 <= int(m.group()) <= 2030:
            hits.append(Hit(DATE_OF_BIRTH, m.start(), m.end(), 0.7))
    return hits
