"""User names inside identifiers: home-directory paths, dotted/underscored handles, and
names written as a sign-off after a dash.

* paths: the segment after ``/Users/``, ``/home/``, ``C:\\Users\\`` (or ``~name``) is a
  user name, whatever it looks like (``/Users/kwame.mensah/...``); placeholders such as
  ``/home/user`` or ``$USER`` are kept;
* handles without an ``@``: ``kwame.mensah``, ``dmitri_k``, ``j.smith``: letter groups
  joined by one dot or underscore, when a part is a name of the lexicon or a word no
  dictionary has, or when a cue such as "user", "handle", "login", "Benutzer" comes
  before. Identifiers made of ordinary words (``max_len``, ``user_id``, ``os.path``,
  ``config.yaml``) are kept;
* sign-offs: one or two words after a dash at the end of a line or message
  ("thanks! — tunde", "danke -- Zhiwei Li"), unless they are ordinary words;
* a capitalised rare word in a message otherwise written in lowercase.
"""

from __future__ import annotations

import re

from learning.language import word_list
from learning.pii.base import PERSON, Hit
from learning.pii.lexicon import _DENY, NameLexicon, stop_words, zipf

_PATH_USER_RE = re.compile(
    r"(?:(?<![\w.])/(?:Users|home|users|Home)/|[A-Za-z]:\\+(?:Users|Dokumente und Einstellungen|"
    r"Documents and Settings)\\+|(?<![\w/])~)([A-Za-z][\w.\-]{0,40}[A-Za-z0-9])"
)
_NOT_USERS = frozenset(
    word_list(
        """
        user username users me you shared public default admin administrator root runner
        ubuntu guest home desktop documents downloads library appdata local temp tmp bin lib
        etc var opt www ec2-user vagrant pi git node app jenkins
        """
    )
)
_HANDLE_RE = re.compile(
    r"(?<![\w.@/\\:#-])([A-Za-z][a-z]*|[a-z]+)([._])([A-Za-z][a-z]*\d{0,4}|[a-z]\d{0,4})"
    r"(?![\w@(]|\.\w)"
)
_FILE_ENDINGS = frozenset(
    word_list(
        """
        py js ts tsx jsx json yaml yml toml md txt log csv html htm css xml ini cfg conf sh
        bash env lock rs go java kt rb php sql db png jpg jpeg gif svg pdf doc docx xls xlsx
        zip gz tar exe dll so whl ipynb com org net io de dev app
        """
    )
)
# identifier parts that are abbreviations in code, not names ("max_len", "min_val")
_CODE_PARTS = frozenset(
    word_list(
        """
        max min len num str int tmp src dst idx cfg var obj val key msg err ctx req res env
        arg args kwargs buf ptr dir pos neg avg std sum cnt fn cb id ids db api url uri app
        lib pkg
        """
    )
)
_HANDLE_CUE = re.compile(
    r"\b(?:user|username|user\s+name|handle|login|account|nick|nickname|alias|benutzer|"
    r"benutzername|nutzername|konto|accountname|id)\b(?:\s+(?:is|was|ist|war|lautet))?[\s:=\"'`]*$",
    re.IGNORECASE,
)
_SIGNOFF_RE = re.compile(
    r"(?:^|[\s!.?,)])(?:—|–|--|-)[ \t]*"
    r"([A-Za-zÀ-ÖØ-öø-ÿ][\w'’-]{1,30}(?:[ \t]+[A-Za-zÀ-ÖØ-öø-ÿ][\w'’-]{1,30})?)"
    r"[ \t]*[.!]?[ \t]*(?:\n|$)"
)


def _name_like(part: str, lexicon: NameLexicon) -> bool:
    low = part.casefold()
    if len(low) < 2 or low in _CODE_PARTS:
        return False
    if low in lexicon.first and low not in lexicon.ambiguous:
        return True
    if low in lexicon.last and low not in lexicon.ambiguous:
        return True
    return low not in stop_words() and zipf(low) < 2.5 and len(low) >= 3


def _path_users(text: str) -> list[Hit]:
    hits: list[Hit] = []
    for m in _PATH_USER_RE.finditer(text):
        name = m.group(1)
        if name.casefold() in _NOT_USERS or name.startswith("$"):
            continue
        hits.append(Hit(PERSON, m.start(1), m.end(1), 0.9))
    return hits


def _handles(text: str, lexicon: NameLexicon) -> list[Hit]:
    hits: list[Hit] = []
    for m in _HANDLE_RE.finditer(text):
        a, sep, b = m.group(1), m.group(2), m.group(3)
        if sep == "." and b.casefold() in _FILE_ENDINGS:
            continue
        cue = bool(_HANDLE_CUE.search(text[max(0, m.start() - 30) : m.start()]))
        b_letters = b.rstrip("0123456789")
        known_first = a.casefold() in lexicon.core_first and a.casefold() not in _CODE_PARTS
        b_known = b_letters.casefold() in lexicon.last or b_letters.casefold() in lexicon.first
        if (
            cue
            or (_name_like(a, lexicon) and b_known and b_letters.casefold() not in _CODE_PARTS)
            or (known_first and len(b_letters) >= 1 and b_letters.casefold() not in _CODE_PARTS)
            or (_name_like(a, lexicon) and (len(b_letters) <= 1 or _name_like(b_letters, lexicon)))
            or (len(a) == 1 and len(b_letters) >= 3 and _name_like(b_letters, lexicon))
        ):
            hits.append(Hit(PERSON, m.start(), m.end(), 0.8 if cue else 0.7))
    return hits


def _signoffs(text: str, lexicon: NameLexicon) -> list[Hit]:
    hits: list[Hit] = []
    for m in _SIGNOFF_RE.finditer(text):
        words = m.group(1).split()
        if all(_name_like(w, lexicon) or w.casefold() in lexicon.first for w in words):
            hits.append(Hit(PERSON, m.start(1), m.end(1), 0.75))
    return hits


_CAP_WORD = re.compile(r"(?<![\w.@/#-])([A-ZÄÖÜ][a-zäöüßà-ÿ]{2,})(?![\w@/-])")
_LOWER_WORD = re.compile(r"\b[a-zäöüß]{2,}\b")


def _capital_in_lowercase(text: str, lexicon: NameLexicon) -> list[Hit]:
    """A capitalised rare word inside a message otherwise written in lowercase ("kannst du
    Kagiso wegen der rechnung fragen"): the writer capitalised it because it is a name."""
    first = next((ch for ch in text if ch.isalpha()), "")
    if not first.islower() or len(_LOWER_WORD.findall(text)) < 4:
        return []  # edited text starts sentences with capitals: nothing stands out
    caps = [m for m in _CAP_WORD.finditer(text) if m.start() > 0 and text[: m.start()].strip()]
    all_caps = list(_CAP_WORD.finditer(text))
    if not caps or len(all_caps) > 2:
        return []
    hits: list[Hit] = []
    for m in caps:
        before = text[: m.start()].rstrip()
        if before.endswith((".", "!", "?", ":", "\n")):
            continue  # a new sentence starts with a capital anyway
        low = m.group(1).casefold()
        if low in stop_words() or low in _DENY or zipf(low) >= 3.0:
            continue
        if low in lexicon.ambiguous and low not in lexicon.first:
            continue
        hits.append(Hit(PERSON, m.start(1), m.end(1), 0.6))
    return hits


def find_handles(text: str, lexicon: NameLexicon) -> list[Hit]:
    """Names in paths, handles without ``@`` and dash sign-offs (module docstring)."""
    hits = _path_users(text) if ("/" in text or "\\" in text or "~" in text) else []
    if "." in text or "_" in text:
        hits.extend(_handles(text, lexicon))
    if "-" in text or "—" in text or "–" in text:
        hits.extend(_signoffs(text, lexicon))
    hits.extend(_capital_in_lowercase(text, lexicon))
    return hits
