"""Entity types, the :class:`Hit` span and the checks every finder shares."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PERSON = "PERSON"
EMAIL = "EMAIL"
PHONE = "PHONE"
ADDRESS = "ADDRESS"
IBAN = "IBAN"
CREDIT_CARD = "CREDIT_CARD"
IP_ADDRESS = "IP_ADDRESS"
URL = "URL"
SECRET = "SECRET"  # noqa: S105 - an entity type name
MENTION = "MENTION"
DATE_OF_BIRTH = "DATE_OF_BIRTH"

ENTITY_TYPES: tuple[str, ...] = (
    PERSON,
    EMAIL,
    PHONE,
    ADDRESS,
    IBAN,
    CREDIT_CARD,
    IP_ADDRESS,
    URL,
    SECRET,
    MENTION,
    DATE_OF_BIRTH,
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One detected span: ``text[start:end]`` is of ``type``; ``score`` in [0, 1]."""

    type: str
    start: int
    end: int
    score: float


# --------------------------------------------------------------------------- helpers


def luhn_ok(digits: str) -> bool:
    """Luhn checksum of a digit string (``python-stdnum``)."""
    from stdnum import luhn

    return digits.isdigit() and luhn.is_valid(digits)


def iban_ok(candidate: str) -> bool:
    """ISO 13616 IBAN: country format and mod-97 (``python-stdnum``)."""
    from stdnum import iban

    s = re.sub(r"[\s-]", "", candidate).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", s):
        return False
    try:
        iban.validate(s, check_country=s[:2] in _IBAN_LENGTHS)
    except ValueError:  # stdnum's ValidationError subclasses ValueError
        return False
    return True


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def shannon_entropy(s: str) -> float:
    """Bits per character of ``s``."""
    if not s:
        return 0.0
    counts: dict[str, int] = {}
    for ch in s:
        counts[ch] = counts.get(ch, 0) + 1
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_random(token: str, *, min_len: int = 20) -> bool:
    """A long token that looks machine-generated (a key, a session id), not a word/identifier."""
    if len(token) < min_len:
        return False
    digits = sum(ch.isdigit() for ch in token)
    letters = sum(ch.isalpha() for ch in token)
    if digits < 2 or letters < 4:
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", token) and len(token) <= 40:
        return False  # commit SHAs, md5/sha1 digests
    if re.fullmatch(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", token
    ):
        return False  # UUIDs are ids, not secrets
    # identifiers made of words: some_long_function_name_v2, SomeLongClassName2
    parts = [p for p in re.split(r"[_\-./]|(?<=[a-z])(?=[A-Z])", token) if p]
    wordy = sum(len(p) for p in parts if re.fullmatch(r"[A-Za-z][a-z]{2,}", p))
    if wordy >= 0.7 * len(token):
        return False
    return shannon_entropy(token) >= 3.4


def _trim_trailing_punct(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] in ".,;:!?'\"»”’)]}>*_~":
        ch = text[end - 1]
        if ch == ")" and text.count("(", start, end) > text.count(")", start, end) - 1:
            break
        end -= 1
    return end


# street-type words (also used by the name lexicon: never a name)
_EN_STREET_TYPES = (
    r"street|st|avenue|ave|av|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|place|pl|way|"
    r"terrace|terr|circle|cir|parkway|pkwy|highway|hwy|square|sq|crescent|cres|close|row|trail|trl|"
    r"alley|walk|grove|gardens|gdns|hill|heights|mews|plaza|point|ridge|run|path|pike|loop|"
    r"crossing|park|green|vale|view|rise|wharf|quay|esplanade|parade|promenade|expressway|turnpike|"
    r"junction|landing|meadow|meadows|mill|mills|hollow|estate|estates|manor|fork|pass|port|"
    r"spring|springs|station|summit|track|villas|wynd|drove|chase|dale|glen|bypass|causeway"
)
_EN_STREET_TYPES_TITLE = (
    r"Alley|Loaf|Branch|Bridge|Brook|Burg|Camp|Canyon|Cape|Center|Cliff|Club|Common|Corner|Course|Cove|"
    r"Creek|Crest|Crossroad|Curve|Dam|Divide|Extension|Falls|Ferry|Field|Flat|Ford|Forest|Forge|"
    r"Fort|Freeway|Garden|Gateway|Harbor|Haven|Inlet|Island|Isle|Key|Knoll|Lake|Land|Light|Lock|"
    r"Lodge|Mall|Mission|Motorway|Mount|Mountain|Neck|Orchard|Oval|Overpass|Passage|Pine|Plain|"
    r"Prairie|Ranch|Rapid|Rest|River|Route|Shoal|Shore|Skyway|Spur|Stravenue|Stream|Throughway|"
    r"Trafficway|Tunnel|Underpass|Union|Valley|Viaduct|Village|Ville|Vista|Wall|Well|Wells"
)
