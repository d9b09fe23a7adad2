"""Chat-aware PII finders and their Presidio recognizer wrappers.

The finders are plain functions ``find_*(text) -> list[Hit]`` so that they can be used,
tested and benchmarked without an NLP pipeline; :func:`build_recognizers` wraps them as
Presidio :class:`~presidio_analyzer.EntityRecognizer` objects for one language each, which
is how :mod:`learning.anonymize` plugs them into an ``AnalyzerEngine``.

Entity types produced here: ``EMAIL``, ``PHONE``, ``ADDRESS``, ``IBAN``, ``CREDIT_CARD``,
``IP_ADDRESS``, ``URL`` (only URLs that carry personal tokens), ``SECRET``, ``MENTION`` and
``PERSON``.

Person names (:func:`find_persons`) combine, in this order:

1. runs of capitalised words containing a known first or last name ("Lara Kennedy",
   "Archie A. Hunt", "Stella van der Veen");
2. lowercase chat names: unambiguous English/German first names ("hey john"), rare words
   that are a first name somewhere ("margrethe"), first name + initial + surname;
3. context cues: titles and "my name is"/"ich heiße"/"named" take the next word(s);
   greetings and verbs such as "ask", "cc", "thanks", "says", "my colleague" take a
   known or non-dictionary word;
4. spaCy NER person spans, trimmed of greetings/cue words and rejected when they are
   ordinary words ("Discipline", "Metallica"); all-lowercase messages are truecased for
   the model first (:func:`truecase`);
5. vocatives ("Orva, can you ...", "..., Christian!"), possessives before personal nouns
   ("Hilarion's address"), unknown words before person verbs ("Satsita lives on"),
   speaker labels of pasted transcripts, lists that are mostly names, and the same word
   elsewhere in the message;
6. name lines of contact cards / forms (:func:`signature_names`, run by the anonymizer
   with the other entities known);
7. runs of two or more capitalised non-dictionary words ("Zosia Czarnecka"; German
   compound nouns such as "Kontoinhaber" excluded), words an e-mail address of the same
   message is made of ("sorry vignette, ... vignettegladu@dayrep.com"), German verb-final
   objects ("kannst du dmytro bescheid geben"), double first names ("hans-uwe") and
   lowercase vocatives at the end ("kannst du das prüfen, vetle?").

Checksums: ``IBAN`` needs mod-97, ``CREDIT_CARD`` Luhn. A card-length number failing Luhn
is not a card number and is left alone (order and tracking numbers look the same); a
token shaped exactly like an IBAN of a known country but failing mod-97 is left alone
too, and no other finder (phone, address, card, secret) reports its digit groups
(:func:`iban_shaped`).

Name lexicon: first and last names of every Latin-script locale that ``faker`` ships
(offline, no download), plus surname shapes ("-ov", "-ski", "-sson", "-dóttir", ...) for
rare words. Words that are also ordinary English/German words ("will", "may", "hope",
"koch", "winter", frequent words by ``wordfreq``) are *ambiguous*: they only count as a
name with a context cue or next to another name token. Common product/tool names,
weekdays and months are never names.
"""

from __future__ import annotations

import bisect
import functools
import importlib
import ipaddress
import math
import pkgutil
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts


def _words(block: str) -> list[str]:
    """Whitespace-separated word list written as a text block."""
    return block.split()


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
    """Luhn checksum of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


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


def iban_ok(candidate: str) -> bool:
    """ISO 13616 check: known country length (when known) and mod-97 == 1."""
    s = re.sub(r"[\s-]", "", candidate).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", s):
        return False
    expected = _IBAN_LENGTHS.get(s[:2])
    if expected is not None and len(s) != expected:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


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


# --------------------------------------------------------------------------- simple patterns

_EMAIL_RE = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
# "john dot smith at gmail dot com" (deliberately obfuscated)
_EMAIL_SPELLED_RE = re.compile(
    r"\b[\w.+-]+(?:\s+(?:dot|punkt)\s+[\w-]+)*\s*(?:\(at\)|\[at\]|\s+at\s+|\s*@\s+)[\w-]+"
    r"(?:\s*(?:\(dot\)|\[dot\]|\s+dot\s+|\s+punkt\s+|\.)[\w-]+)*\s*(?:\(dot\)|\[dot\]|\s+dot\s+|\s+punkt\s+)"
    r"(?:com|de|org|net|io|at|ch|co|uk|edu|info|eu)\b",
    re.IGNORECASE,
)


_EMAIL_LOCAL = re.compile(r"(?<![\w.+%-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})@[A-Za-z0-9-]+\.")


def _email_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _EMAIL_RE.finditer(text)]


def find_emails(text: str) -> list[Hit]:
    if "@" not in text and " at " not in text.lower() and "(at)" not in text.lower():
        return []
    hits = [Hit(EMAIL, m.start(), m.end(), 1.0) for m in _EMAIL_RE.finditer(text)]
    if not hits:
        hits = [Hit(EMAIL, m.start(), m.end(), 0.8) for m in _EMAIL_SPELLED_RE.finditer(text)]
    return hits


_SLACK_DISCORD_MENTION_RE = re.compile(r"<@[!&]?[A-Za-z0-9]+(?:\|[^>\n]{0,80})?>")
_AT_HANDLE_RE = re.compile(r"(?<![\w@.+-])@([A-Za-z][\w.\-]{1,38}[A-Za-z0-9_])(?![\w@(])")
_NOT_PERSON_HANDLES = frozenset(
    _words(
        """
    here channel everyone all team admins admin mods moderators property dataclass
    staticmethod classmethod abstractmethod override cached_property pytest app router bot
    slack discord types typing param return returns throws deprecated overload lru_cache
    wraps
    """
    )
)


def find_mentions(text: str) -> list[Hit]:
    if "@" not in text:
        return []
    hits = [Hit(MENTION, m.start(), m.end(), 1.0) for m in _SLACK_DISCORD_MENTION_RE.finditer(text)]
    for m in _AT_HANDLE_RE.finditer(text):
        handle = m.group(1).rstrip(".-")
        if handle.casefold() in _NOT_PERSON_HANDLES or handle.split(".")[0] in _NOT_PERSON_HANDLES:
            continue
        end = m.start() + 1 + len(handle)
        hits.append(Hit(MENTION, m.start(), end, 0.9))
    return hits


_IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?![\w]|\.\d)")
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?:/\d{1,3})?(?![\w:])"
)
_NON_PERSONAL_IPS = frozenset({"0.0.0.0", "127.0.0.1", "255.255.255.255", "::", "::1"})  # noqa: S104 - a value to keep, not a bind


def find_ips(text: str) -> list[Hit]:
    hits: list[Hit] = []
    if "." in text:
        for m in _IPV4_RE.finditer(text):
            addr = m.group().split("/")[0]
            try:
                ipaddress.IPv4Address(addr)
            except ValueError:
                continue
            if addr in _NON_PERSONAL_IPS or addr.startswith("255.255."):
                continue
            hits.append(Hit(IP_ADDRESS, m.start(), m.end(), 0.95))
    if text.count(":") >= 2:
        for m in _IPV6_RE.finditer(text):
            addr = m.group().split("/")[0]
            if addr.count(":") < 2 or len(addr) < 6:
                continue
            try:
                ipaddress.IPv6Address(addr)
            except ValueError:
                continue
            if addr in _NON_PERSONAL_IPS:
                continue
            hits.append(Hit(IP_ADDRESS, m.start(), m.end(), 0.95))
    return hits


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


# --------------------------------------------------------------------------- URLs and secrets

_URL_RE = re.compile(r"(?:\b[a-z][a-z0-9+.-]{1,9}://|\bwww\.)[^\s<>\"'`|\\]+", re.IGNORECASE)
_SENSITIVE_PARAM = re.compile(
    r"(?:^|[_\-.])(?:token|access_token|id_token|refresh_token|auth|authorization|key|apikey|api_key|"
    r"code|sig|signature|secret|password|passwd|pass|pwd|session|sessionid|sid|jwt|otp|email|e-mail|"
    r"mail|user|username|uid|userid|user_id|invite|reset|ticket|hash|nonce|credential|phone|tel|"
    r"name|firstname|lastname|login|account|customer|client_secret)(?:$|[_\-.])",
    re.IGNORECASE,
)
_PERSONAL_PATH = re.compile(
    r"/(?:reset|reset-password|password-reset|invite|invitation|verify|verification|confirm|activate|"
    r"unsubscribe|magic|magic-link|login|auth|share|join|s|t|u|user|users|profile|download|dl)/"
    r"([^/?#\s]{8,})",
    re.IGNORECASE,
)
_WEBHOOK = re.compile(
    r"hooks\.slack\.com/|discord(?:app)?\.com/api/webhooks/|/webhooks?/[\w-]{16,}", re.IGNORECASE
)


def _url_is_personal(url: str) -> bool:
    if re.match(r"[a-z][a-z0-9+.-]*://[^/@\s]+:[^/@\s]+@", url, re.IGNORECASE):
        return True  # user:password@host
    if _WEBHOOK.search(url):
        return True
    head, _, query = url.partition("?")
    query, _, fragment = query.partition("#")
    if "#" in head:
        head, _, fragment = head.partition("#")
    for part in (query, fragment):
        for pair in re.split(r"[&;]", part):
            name, eq, value = pair.partition("=")
            if eq and value and _SENSITIVE_PARAM.search(name):
                return True
            if eq and looks_random(value, min_len=16):
                return True
    m = _PERSONAL_PATH.search(head)
    if m and (looks_random(m.group(1), min_len=8) or len(m.group(1)) >= 20):
        return True
    return any(looks_random(seg, min_len=20) for seg in head.split("/")[3:])


def find_urls(text: str) -> list[Hit]:
    if "://" not in text and "www." not in text.lower():
        return []
    hits: list[Hit] = []
    for m in _URL_RE.finditer(text):
        end = _trim_trailing_punct(text, m.start(), m.end())
        if _url_is_personal(text[m.start() : end]):
            hits.append(Hit(URL, m.start(), end, 0.95))
    return hits


_SECRET_PREFIX_RE = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?:proj-|ant-(?:api\d\d-)?|live-|test-)?[A-Za-z0-9_\-]{16,}"
    r"|[spr]k_(?:live|test)_[A-Za-z0-9]{12,}"
    r"|xox[abposre]-[A-Za-z0-9\-]{10,}"
    r"|xapp-\d-[A-Za-z0-9\-]{10,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|hf_[A-Za-z0-9]{30,}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_\-]{50,}"
    r"|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r"|[MNO][A-Za-z\d]{23,25}\.[\w-]{6}\.[\w-]{27,38}"
    r")(?![\w-])"
)
_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL
)
_KEYWORD_SECRET_RE = re.compile(
    r"\b(?P<kw>passwords?|passwort|passwd|pwd|pw|pass|passphrase|kennwort|secret|client[_ -]?secret|"  # noqa: E501
    r"token|api[_ -]?key|apikey|access[_ -]?key|secret[_ -]?key|auth[_ -]?token|private[_ -]?key|pin|"  # noqa: E501
    r"otp|2fa(?:[_ -]code)?|code)\b"
    # what the secret is for: "Passwort für das WLAN: x", "password for the account is x",
    # "the admin password, it was x" (then an explicit separator must follow)
    r"(?P<fill>\s+(?:for|für|of|on|to|zum|zur|vom|von|des|vom|fürs)(?:\s+[\w.-]+){1,3}?"
    r"|\s*,\s*(?:it|that|which|es|das)(?:\s+(?:is|was|ist|war))?(?=\s+(?:is|was|ist|war|\S+\s*$)|\s*:))?"
    r"(?P<sep>(?(fill)"
    r"(?:\s*(?:[:=]|->|=>)\s*|\s+(?:is|ist|lautet|was|war|wäre|would be)\s*:?\s*)"
    r"|(?:\s*(?:[:=]|->|=>)\s*|\s+(?:is|ist|lautet|was|war|wäre|would be)\s*:?\s*|\s+)))"
    r"(?P<q>[\"'`]?)(?P<val>[^\s\"'`,;]{3,})",
    re.IGNORECASE,
)
_GENERIC_TOKEN_RE = re.compile(r"(?<![\w/+=.@-])[A-Za-z0-9+/_\-]{20,}={0,2}(?![\w/+=-])")
_VALUE_WORDS = frozenset(
    _words(
        """
    the a an is ist was wrong incorrect correct changed expired reset required needed
    missing invalid valid here there same new old ok okay set not nicht falsch richtig leer
    empty none null true false you your my mein dein ihr it es das der die und and or oder
    for für to in limit limits count counts length size usage expires
    """
    )
)


def find_secrets(text: str) -> list[Hit]:
    hits = [Hit(SECRET, m.start(), m.end(), 1.0) for m in _SECRET_PREFIX_RE.finditer(text)]
    if "-----BEGIN" in text:
        hits.extend(Hit(SECRET, m.start(), m.end(), 1.0) for m in _PRIVATE_KEY_RE.finditer(text))
    for m in _KEYWORD_SECRET_RE.finditer(text):
        kw = m.group("kw").casefold()
        sep = m.group("sep").strip().casefold()
        val = m.group("val").rstrip(".!?)")
        if not val or val.casefold() in _VALUE_WORDS:
            continue
        explicit = sep in {":", "=", "->", "=>"} or bool(m.group("q"))
        has_sym = any(not ch.isalpha() for ch in val) or (
            val != val.lower() and val != val.capitalize()
        )
        if kw in {"code", "otp", "pin"} or kw.startswith("2fa"):
            ok = bool(re.fullmatch(r"\d{4,8}", val)) and (
                explicit or sep in {"is", "ist", "lautet"}
            )
        elif kw in {
            "token",
            "secret",
            "api key",
            "api_key",
            "apikey",
            "api-key",
            "access key",
            "access_key",
            "auth token",
            "auth_token",
            "client secret",
            "client_secret",
        }:
            ok = (explicit and len(val) >= 6 and not val.isdigit() and has_sym) or looks_random(
                val, min_len=12
            )
        elif not sep:  # "password hunter2" without separator: only clearly non-word values
            ok = has_sym and len(val) >= 6 and not val.isdigit()
        else:
            ok = explicit or has_sym
        if ok:
            start = m.start("val")
            hits.append(Hit(SECRET, start, start + len(val), 0.9))
    for m in _GENERIC_TOKEN_RE.finditer(text):
        tok = m.group()
        if iban_ok(tok) or (tok.isdigit() and luhn_ok(tok)):
            continue
        if looks_random(tok, min_len=20):
            hits.append(Hit(SECRET, m.start(), m.end(), 0.75))
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
    return hits


# --------------------------------------------------------------------------- postal addresses

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
_NAME_WORD = r"(?:[A-ZÄÖÜ][\w'’.-]*|[a-zäöü][\w'’-]{2,}|\d{1,3}(?:st|nd|rd|th)|O'[A-Z]\w+|Mc\w+)"
_EN_STREET_RE = re.compile(
    r"(?<![\w-])(?:\d{1,6}[A-Za-z]?(?:[-/]\d{1,5})?,?\s+){1,2}"
    r"(?:(?i:north|south|east|west|n|s|e|w|ne|nw|se|sw)\.?\s+)?"
    rf"(?:{_NAME_WORD}\s+){{1,4}}"
    rf"(?:(?i:{_EN_STREET_TYPES})\b\.?|(?:{_EN_STREET_TYPES_TITLE})\b)"
    r"(?:\s+(?i:north|south|east|west|n|s|e|w|ne|nw|se|sw)\b\.?)?",
)
_DE_STREET_SUFFIX = (
    r"straße|strasse|str\.|str\b|weg|gasse|allee|platz|ring|damm|ufer|chaussee|steig|pfad|markt|"
    r"hof|graben|wall|kai|zeile|stieg|tor|brücke|bruecke|berg|feld|garten|anger|dorf|park|"
    r"promenade|steg|twiete|kamp|winkel|siedlung|höhe|hoehe|gässchen|stiege|lände"
)
_DE_STREET_RE = re.compile(
    r"(?<![\w-])(?:"
    rf"[A-ZÄÖÜa-zäöü][\wäöüß.'-]*(?i:{_DE_STREET_SUFFIX})"
    r"|(?:[A-ZÄÖÜ][\wäöüß.-]*[ -]){1,3}(?:Straße|Strasse|Str\.|Weg|Gasse|Allee|Platz|Ring|Damm|Ufer|Chaussee|Steig|Pfad|Markt|Graben|Wall|Kai|Zeile|Stieg|Tor|Brücke|Berg|Feld|Garten|Anger|Park|Promenade|Steg|Twiete|Kamp|Winkel|Höhe)"  # noqa: E501
    r"|(?:[a-zäöü][\wäöüß.-]*[ -]){1,2}(?i:straße|strasse|str\.|weg|gasse|allee|platz|ring|damm|ufer|chaussee)"  # noqa: E501
    r"|(?:Am|An der|An den|Auf der|Auf dem|Im|In der|In den|Zum|Zur|Unter den|Hinter der|Hinter dem|Vor dem|Alt|Alte|Neue|Neuer)\s+[A-ZÄÖÜ][\wäöüß.-]+"  # noqa: E501
    r"|(?i:Rue|Route|Chemin|Avenue|Boulevard|Via|Viale|Piazza|Corso|Strada|Vicolo|Calle|Avenida|Rua|Travessa|Largo|Praça|Plaza|Paseo|ul\.|Ulica)\s+(?:[\w'’.-]+\s+){0,5}?[\w'’.-]+"
    r")"
    r"\s+\d{1,5}(?:\s?[a-zA-Z](?![\w]))?(?:\s?[-/]\s?\d{1,5}[a-zA-Z]?){0,2}\b\.?"
    # a door / staircase number after the house number: "Floridusgasse 89 9/4, ..."
    r"(?:[ \t]\d{1,4}(?:[-/]\d{1,4}){0,2}(?=[ \t]*(?:[,\n?!;)]|$|\.(?:\s|$))))?",
)
_LOCATION_PREP_BEFORE = re.compile(
    r"(?:\b(?:in|an|auf)\s+der|\bam|\bim|\bzur|\bzum|\bnach|\bwohne|\bwohnt|\bat|\bon)\s+$",
    re.IGNORECASE,
)
_FR_NUMBER_FIRST_RE = re.compile(
    r"(?<![\w-])\d{1,5}(?:\s?(?:bis|ter))?,?\s+(?:rue|route|chemin|avenue|boulevard|bd|allée|impasse|place|quai|via|viale|piazza|calle|avenida|rua)\s+(?:[\w'’.-]+\s+){0,4}?[\w'’.-]+",
    re.IGNORECASE,
)
_PO_BOX_RE = re.compile(
    r"\b(?:P\.?\s?O\.?\s?Box|Post(?:fach| Office Box))\s+\d{1,7}\b", re.IGNORECASE
)
_ADDR_TAIL_ITEM = re.compile(
    r"(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|bldg|building|dept|whg|wohnung|etage|og|stock|top|stiege)\b\.?\s*#?\s*[\w-]{1,6}"
    r"|\#\s?\d{1,6}"
    r"|\d{5}(?:-\d{4})?"  # US ZIP / DE PLZ
    r"|(?:[A-Z]-)?\d{4,5}(?=\s+[A-ZÄÖÜ])"  # AT/CH PLZ before a city
    r"|[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}"  # UK postcode
    r"|[A-Z]\d[A-Z]\s?\d[A-Z]\d"  # Canadian postcode
    r"|[A-Z]{2}(?![\w])"  # state abbreviation
    r"|(?:[A-ZÄÖÜ][^\W\d_]*(?:['’-][^\W\d_]+)*)(?:[ -](?:[A-ZÄÖÜ][^\W\d_]*(?:['’-][^\W\d_]+)*|am|an|der|im|bei|upon|on|de|la|sur)(?![\w]))*",  # noqa: E501
)
_ADDR_SEP = re.compile(
    r"[ \t]*(?:,|\n|\\n)?[ \t]*(?:,|\n|\\n)?[ \t]*(?:(?<=\n)[?•·*>\-–{}|]{1,3}[ \t]*|(?<=\n[ \t])[?•·*>\-–{}|]{1,3}[ \t]*)?"  # noqa: E501
)
_ADDR_STOP_WORDS = frozenset(
    _words(
        """
    i you he she we they it the a an and or but so if then please thanks thank can could
    will would should is are was were be been am for to from in on at by with of my your our
    their this that these those call meet send ship bitte danke und oder aber ich du er sie
    wir ihr es der die das ein eine zu von mit für im am ist sind war my mein dein unser
    ab bis seit vom zum zur lautet since until as after before nach vor ab ca
    """
    )
)


_ADDR_AND_STREET = re.compile(
    rf"\s+(?i:and|&|und|/)\s+(?:{_NAME_WORD}\s+){{1,3}}?(?:(?i:{_EN_STREET_TYPES})\b\.?|(?:{_EN_STREET_TYPES_TITLE})\b)"
)
_ADDR_LOWER_PLACE = re.compile(
    r"[a-zäöüß][^\W\d_]{2,}(?:[ -][a-zäöüß][^\W\d_]{2,}){0,2}(?=\s*(?:,|\d|$|\n))"
)
_ADDR_CONTEXT = re.compile(
    r"(?:\baddress(?:\s+is)?|\baddress\s+(?:to|with)|\bsent\s+to|\bupdate\s+(?:it\s+)?(?:to|with)|"
    r"\bcorner\s+of|\blive[sd]?\s+(?:at|on|in)|\bliving\s+(?:at|on)|\blocated\s+at|\boffice\s+is\s+at|"
    r"\bmeet\s+(?:me|you|us)\s+at|\bsend\s+(?:it\s+|them\s+|the\s+\w+\s+)?to|\bship\s+(?:it\s+)?to|"
    r"\bdeliver(?:ed)?\s+(?:it\s+)?to|\breturn\s+(?:it\s+)?to|\bmoved\s+to|\bwohne\s+(?:in\s+der|in|am|an\s+der)|"
    r"\bwohnt\s+(?:in\s+der|in|am)|\b\w*adresse(?:\s+ist|\s+lautet)?|\banschrift|\bliefer\w*\s+(?:an|nach)|"
    r"\bschick\w*\s+(?:es\s+|das\s+)?an)\s*:?\s*$",
    re.IGNORECASE,
)
# a door / staircase number after the house number: "Floridusgasse 89 9/4, ..."
_DOOR = r"(?:[ \t]\d{1,4}(?:[-/]\d{1,4}){0,2}(?=[ \t]*(?:[,\n?!;)]|$|\.(?:\s|$))))?"
_ADDR_AFTER_CONTEXT_CI = re.compile(
    r"(?:\d{1,6}[A-Za-z]?[ \t]+){0,2}[^\W\d_][\w'’.-]+(?:[ \t]+[^\W\d_][\w'’.-]+){0,3}[ \t]+\d{1,5}[a-zA-Z]?\b"  # noqa: E501
    + _DOOR
)
_ADDR_AFTER_CONTEXT = re.compile(
    r"(?:\d{1,6}[A-Za-z]?[ \t]+){0,2}[A-ZÄÖÜ][\wäöüß'’.-]+(?:[ \t]+[A-ZÄÖÜ][\wäöüß'’.-]+){0,3}[ \t]+\d{1,5}[a-zA-Z]?\b"  # noqa: E501
    + _DOOR
    + rf"|(?:[A-ZÄÖÜ][\wäöüß'’.-]+[ \t]+){{1,4}}(?:{_EN_STREET_TYPES})\b\.?"
)


_NUM_NAME_NUM = re.compile(
    r"(?<![\w.,/:-])\d{1,6}[ \t]+([^\W\d_][\wäöüß'’-]+(?:[ \t]+[^\W\d_][\wäöüß'’-]+){0,2})[ \t]+\d{1,5}[a-z]?(?![\w.:/-]|[.,]\d)"  # noqa: E501
)


def _extend_address(text: str, end: int, limit: int = 90) -> int:
    """Grow an address span over trailing unit / city / state / postcode / country parts."""
    stop_at = min(len(text), end + limit)
    items = 0
    m2 = _ADDR_AND_STREET.match(text, end)  # "the corner of 5th Ave and Main St"
    if m2:
        end = m2.end()
    while end < stop_at and items < 6:
        sep = _ADDR_SEP.match(text, end)
        pos = sep.end() if sep else end
        if pos >= len(text):
            break
        m = _ADDR_TAIL_ITEM.match(text, pos)
        if (not m or m.end() == pos) and ("," in text[end:pos] or "\n" in text[end:pos]):
            m = _ADDR_LOWER_PLACE.match(text, pos)  # "..., fahrdorf, germany 87424"
        if not m or m.end() == pos:
            break
        words = re.findall(r"[^\W\d_]+", m.group())
        if words and words[0].casefold() in _ADDR_STOP_WORDS:
            break
        if (
            m.group().isalpha()
            and m.group()[0].islower()
            and not re.search(r"[,\n]", text[end:pos])
        ):
            break
        end = _trim_trailing_punct(text, pos, m.end()) if m.group().endswith(".") else m.end()
        items += 1
    return end


_EN_STREET_CI_RE = re.compile(
    r"(?<![\w-])(?:\d{1,6}[A-Za-z]?(?:[-/]\d{1,5})?,?\s+){1,2}"
    rf"(?:{_NAME_WORD}\s+){{1,4}}?"
    rf"(?:(?:{_EN_STREET_TYPES})s?\b\.?|(?:{_EN_STREET_TYPES_TITLE})s?\b)",
    re.IGNORECASE,
)
_MILITARY_RE = re.compile(
    r"\b(?:PSC|Unit|USNS|USNV|USS|USCGC|CMR)\b[^\n]{1,30}?\n?[ \t]*(?:FPO|DPO|APO)\s+(?:AA|AE|AP)\s+\d{5}",  # noqa: E501
    re.IGNORECASE,
)


_STREET_NO_NUMBER_RE = re.compile(
    r"\b(?:on|at|of|in|and|into|along|auf|in der|an der)\s+"
    r"((?:[A-Z][\w'’-]+\s+){1,3}"
    r"(?:Street|Avenue|Road|Lane|Drive|Boulevard|Court|Place|Terrace|Way|Ridge|Summit|Crescent|"
    r"Parkway|Square|Highway|Close|Grove|Gardens|Alley|Trail|Straße|Strasse|Weg|Gasse|Allee|Platz)s?)\b"
)
_RISKY_DE_SUFFIX = re.compile(
    r"(?:ring|tor|hof|berg|feld|park|markt|dorf|wall|kai|damm|ufer|steg|kamp|anger|garten|höhe|"
    r"steig|pfad|graben|zeile|stieg|winkel|siedlung|promenade|twiete|brücke|bruecke|platz|weg)$",
    re.IGNORECASE,
)


def _risky_de_street_word(word: str) -> bool:
    """A street-suffix match that is more likely an ordinary word ("during", "Monitor")."""
    low = word.casefold().rstrip(".")
    if "-" in low or not _RISKY_DE_SUFFIX.search(low):
        return False
    return zipf(low) >= 3.0


_CROSS_STREET_BEFORE = re.compile(
    r"(?<![\w'’-])[^\W\d_][\w'’-]{2,30}\s+(?:and|&)\s+$", re.IGNORECASE
)
_UNIT_BEFORE = re.compile(
    r"(?<![\w])(?:apt|apartment|suite|ste|unit|flat|whg|wohnung)\.?\s*#?\s*[\w-]{1,6},?\s+$",
    re.IGNORECASE,
)
_CORNER_AND = re.compile(
    r"\s+(?:and|&|und)\s+((?:[^\W\d_][\w'’.-]*\s+){0,2}[^\W\d_][\w'’.-]*)", re.IGNORECASE
)


def _corner(text: str, hits: list[Hit]) -> list[Hit]:
    """ "the corner of 5th Ave and Main St": take the second street too."""
    out = []
    for h in hits:
        if re.search(r"corner\s+of\s*$", text[max(0, h.start - 16) : h.start], re.IGNORECASE):
            m = _CORNER_AND.match(text, h.end)
            if m and not any(w.casefold() in stop_words() for w in m.group(1).split()):
                h = Hit(h.type, h.start, m.end(), h.score)
        out.append(h)
    return out


def find_addresses(text: str) -> list[Hit]:
    return [
        Hit(h.type, h.start, h.start + len(text[h.start : h.end].rstrip()), h.score)
        for h in _corner(text, _find_addresses(text))
    ]


def _find_addresses(text: str) -> list[Hit]:
    if not any(ch.isdigit() for ch in text) and "address" not in text.lower():
        return []
    hits: list[Hit] = []
    for rx, score in (
        (_EN_STREET_RE, 0.8),
        (_DE_STREET_RE, 0.8),
        (_FR_NUMBER_FIRST_RE, 0.7),
        (_PO_BOX_RE, 0.8),
    ):
        for m in rx.finditer(text):
            start = m.start()
            if rx is _DE_STREET_RE:
                # "in der hauptstraße 5": leading function words are not part of it
                sw = stop_words()
                words_in = m.group().split()
                skip = 0
                while m.group()[0].islower() and skip < len(words_in) - 2 and words_in[skip] in sw:
                    skip += 1
                if skip:
                    start += len(" ".join(words_in[:skip])) + 1
                word = re.match(r"[^\W\d_][\w'.-]*", text[start : m.end()])
                if (
                    word
                    and _risky_de_street_word(word.group())
                    and not _LOCATION_PREP_BEFORE.search(text[max(0, start - 12) : start])
                    and not _ADDR_CONTEXT.search(text[max(0, start - 40) : start])
                ):
                    continue  # "during 1971", "Spring 2024", "Monitor 2"
                if any(w.casefold() in _DENY for w in words_in[skip:]):
                    continue  # "Am Freitag 10 Uhr"
            back = re.search(r"(?<![\w.,-])\d{1,6}\s+$", text[max(0, start - 8) : start])
            if back:  # "497 Im Sandbüel 45": building number before the street
                start -= len(back.group())
            unit = _UNIT_BEFORE.search(text[max(0, start - 24) : start])
            if unit:  # "Apt 4B, 123 Main St"
                start -= len(unit.group())
            cross = _CROSS_STREET_BEFORE.search(text[max(0, start - 40) : start])
            if cross and _ADDR_CONTEXT.search(
                text[max(0, start - 40 - 48) : start - len(cross.group())]
            ):
                start -= len(
                    cross.group()
                )  # an intersection: "to Gennaro and Obere Bahnhofstrasse 9"
            hits.append(Hit(ADDRESS, start, _extend_address(text, m.end()), score))
    for m in _MILITARY_RE.finditer(text):
        hits.append(Hit(ADDRESS, m.start(), m.end(), 0.8))
    # a street named without a house number: "shows on Durr Park Street"
    for m in _STREET_NO_NUMBER_RE.finditer(text):
        hits.append(Hit(ADDRESS, m.start(1), m.end(1), 0.55))
    # lowercase / less common street types, only right after "i live at", "address:", ...
    for m in _EN_STREET_CI_RE.finditer(text):
        if _ADDR_CONTEXT.search(text[max(0, m.start() - 40) : m.start()]):
            hits.append(Hit(ADDRESS, m.start(), _extend_address(text, m.end()), 0.7))
    # "1760 Holzschachen 70": building number, street name, house number
    for m in _NUM_NAME_NUM.finditer(text):
        words = m.group(1).split()
        if any(w.casefold() in _ADDR_STOP_WORDS or w.casefold() in _DENY for w in words):
            continue
        rarest = min(zipf(w.casefold()) for w in words)
        if rarest >= 4.0 or (not words[0][0].isupper() and rarest >= 2.0):
            continue  # lowercase: only with a clearly non-dictionary street name
        hits.append(Hit(ADDRESS, m.start(), _extend_address(text, m.end()), 0.6))
    # "my address is Holzschachen 70, ..." / "lives on Durr Park Street"
    # (tried at every word start right after such a cue, so that a match starting earlier,
    # "adresse ist weblinger gürtel 92", does not hide the one after the cue)
    for w in re.finditer(r"(?<![\w'’.-])[^\W_]", text):
        pos = w.start()
        if any(h.start <= pos < h.end for h in hits):
            continue
        if not _ADDR_CONTEXT.search(text[max(0, pos - 40) : pos].rstrip(" \t")):
            continue
        am = _ADDR_AFTER_CONTEXT.match(text, pos) or _ADDR_AFTER_CONTEXT_CI.match(text, pos)
        if am is None:
            continue
        first_word = re.match(r"[^\W\d_]+", am.group())
        if first_word and first_word.group().casefold() in _ADDR_STOP_WORDS:
            continue
        hits.append(Hit(ADDRESS, am.start(), _extend_address(text, am.end()), 0.7))
    return hits


# --------------------------------------------------------------------------- names

_LATIN_NAME = re.compile(r"^[A-Za-zÀ-ÖØ-öø-ÿĀ-žȘ-ț'’]+$")

# Name-lexicon entries that are also among the 10k most frequent English/German words
# (derived offline with wordfreq from faker's non-English/German locales): never a name
# on their own without a cue.
_AMBIGUOUS_FROM_OTHER_LOCALES = """
adler aller among an andrews apollo arab armstrong arts atlanta auch aus bach back bail ball
ban bann barber bare barnes barth bass bath bauch bauer baum bayer bean beard beck becker
beer bent benz berg berge bergen berger best beste beta birmingham bischof bite bitten black
blick block bock bond bones bonner booth bore bosch brand brands braun bravo breit brick
bridge bridges bright bruder buch bull burger bury bär bürger camp camps canal cant car
cares carpenter carrier cases chambers champagne chan chapman chen church clear close cock
comment company constant contractor convey cook costa cousin cousins cox crane cross cruise
curry da dach dam dar dare das dash dass date davidson davies davor day de deep den denk der
dick die din divine doe dom downs drum durham each eck edwards einer en engel engen engl
english es ey fair fall farmer faust fee feinen felder ferguson ferrari ferry field fields
fisch fischer fleck flood floor flowers font foot forbes forget fox freely frei freitag
fresh frisch frost fry fröhlich fuchs funk fürst gal gallen gamble gandhi garcia gates
gelder ging glass glasses glück good graf grand grande gras grau grey grill grob gross
grüner guard gun gut gute gärtner hacker hahn hammer hand harte hartmann hay heck heer heim
heiss held hell helle heller helm herbst herd herzog hills hirsch ho hofer hoffmann hofmann
holder hollywood holt hood hook hopkins horn house huber hug hull hurt ii ing ion jail
januar jenkins jerusalem jet johns johnston joke jung juni junk jäger kader kaufmann keller
kellner kenn kern key khan kick kidney killer kind kindle kiss klein klima klug knapp knight
koch kohl kopf kosten kraft krebs kuba kunde kurz könig la lad lage lamb lancaster lande
lang lange langer lanka lass lasse lassen law leber lehmann leider li lie lies lin lindner
linke lips list lo loan lopez lord lot low luxemburg lynch lyon maas mach made madrid maine
malen mall mangel mann mans mar marks mars martial marx masse master mate mayer mayor meer
meier meister merchant mick mies mio mir mist modi monk moon moore more morrison moss
mountain mozart muslim must mutti my mühle müller na nagel naja nazi nee nette neu neumann
ninja nord nur o'brien oak obama odd op orleans owe pace pages pal palm parent parks parts
pastor pauli paulus per peters petrus petty phillips pi pier pilz plaza pol poland pole pop
pope porto post potter power powers priest prinz put quartier rails ram rauch read reader
real reich reicher reif rein reine reis reiter renault richards richardson richter rim ring
ritter rivers roberts robertson room roots roth römer saga salat sales salmon salz san sang
sauber sauer savage schaden scharf schatz scheibe scherz schiller schmid schmidt schmitt
schmuck schneider scholz schon schreiber schröder schubert schuh schulz schwarz schweizer
schäfer schön schüler sellers sen sep server seven shah sharp shaw shields shine short silk
simmons sims singer singh small smart snow solar sole soo soon spain springer st stack stamm
stange stark staub stein steiner stern steuer stevens stock stolz story strand strauss
street strong sturm suits sur swift ta tage tan tank the thomson ties tone too tor tore
tours und uni uno us valid ver vi vogel volk vorm wage wagner wall walls walsh wang ware
warrior water waters watts way weber weeks weis weiss welch werd were westfalen white wiener
wies wild wilde wille wise wit wolff woods wu wunsch yang yoga yu zahn zimmer zimmermann zu
zürcher
"""

# English/German first names (faker en_*/de_* locales) that are common words, places,
# months, titles or abbreviations in English or German chat.
_WORDLIKE = _words(
    """
    ab abb ace add admiral ah al alabama alberta alexandria alpha america angel angeles
    april arch archer arizona art asia atlas august author autumn baby baker banks baptist
    baron basel beat bee bell belle berlin berry bird bishop blessing bliss boss boston
    branch brain brown buck bud buddy burns bush butler cal cam can candy cannon canyon cap
    captain carry case cash chance champ charity cherry chin china chip christ christen
    christian cleveland cliff clay colonel columbia columbus comfort con cook cooper coral
    cord council crystal cuba dallas danish darin dawn del delta denver destiny diamond doc
    dock doctor doll dot drake drew duke early easter eben echo edit elder else era essence
    essex ever fairy faith fancy fate fed fern ferne fisher fleet florida ford forest forum
    foster france frank french friend gay general genesis geneva genie german ginger golden
    governor grace grant graves gray green grove guy hall halle ham handy harm harmony harsh
    hart haven heaven hence hill holland holly hope houston hung hunt hunter india indiana
    indie infant innocent ireland iris isis israel ivory ivy jade january jena job journey
    joy judge june junior justice kaiser karma kenya kiel king kit kitty lady lake lane
    lawyer le lean lemon less liberty line link little london lone long love loyal lucky mad
    magen mai major mal male man manila marine mark marry marsh marshal math mat may media
    melbourne melody memphis mentor mercy merry metro mile miles miller mills minor miracle
    missouri montana nail neo nevada noble north nova oma oral orange page paris park peace
    pearl peer penny pepper phoenix pink pleasant porsche porter press price prima prince
    princess queen raid rand raven reason red reed rice rich richmond ridge river rock rocky
    roll roma rome rose royal ruby rush saal sad sage said saint santa shade shepherd sie
    silver sincere sing sister skip sky smith sommer son spring star sterling stone storm
    summer sunday sunny sunshine tab tal te tea tennessee texas theres til till tiny tory
    toy trace treasure trinity true unique unknown urban van venice venus victory villa von
    wash washington west will wing winter wood worth york young von sie an man einer dann
    mal ab davon allen eben leider tage anders beste ernst lage rein tod per juli juni darin
    naja tor sage stein berg lasse uni tore bitten mist rand reine les kenn landen fern
    wende vorm dom dax lies malen pol wille ey brennen ferne helle ing made uno ver heide
    jung lang lange klein koch wolf engel sturm graf vogel fuchs hahn braun schwarz weiss
    weiß gross groß fischer bauer becker meister richter keller jäger ritter herzog bischof
    sonne mond stern liebe glück glueck kurz hans solange bett
    """
)

_DENY = frozenset(
    _words(
        """
    monday tuesday wednesday thursday friday saturday sunday today tomorrow yesterday
    tonight montag dienstag mittwoch donnerstag freitag samstag sonntag heute morgen gestern
    january february march april may june july august september october november december
    januar februar märz maerz mai juni juli oktober dezember jira slack github gitlab docker
    kubernetes k8s aws azure gcp linux windows mac macos ios android python java javascript
    typescript rust golang go node npm pip react vue angular django flask postgres
    postgresql mysql redis kafka nginx apache terraform ansible jenkins grafana sentry
    notion confluence zoom teams outlook gmail google chrome firefox safari excel word
    powerpoint openai chatgpt gpt claude llama mistral gemini copilot discord whatsapp
    telegram signal bot admin user users team channel server client api sdk cli ui ux dev
    prod staging hello hi hey thanks thank ok okay yes no yeah nope lol sure please bitte
    danke hallo ja nein phone email mail website fax mobile tel date subject name address
    nan null none undefined
    adresse telefon betreff numpy pandas scipy pytest pytorch torch tensorflow keras sklearn
    jupyter conda venv poetry pydantic fastapi uvicorn gunicorn celery sqlalchemy alembic
    mypy ruff black flake8 pylint kubectl helm argocd istio prometheus loki tempo datadog
    splunk elastic kibana logstash webpack vite pnpm yarn eslint prettier babel nextjs nuxt
    svelte tailwind bootstrap jquery graphql grpc protobuf json yaml toml csv xml html css
    sql nosql mongodb sqlite lambda ec2 s3 rds cloudflare vercel netlify heroku
    supabase firebase stripe twilio sendgrid git gitea bitbucket circleci travis buildkite
    dependabot renovate sonarqube huggingface transformers peft lora qlora gguf ollama vllm
    llm rag
    """
    )
)

_STRONG_CUES = re.compile(
    r"(?:\bmy\s+name\s+is|\bname\s+is|\bmy\s+name'?s|\bname\s*[:=?]|\bhei(?:ß|ss)t|"
    r"\bnamed(?:\s+(?:him|her|them|it))?|\bcalled(?:\s+(?:him|her|them|it))?|"
    r"\bi\s+am\s+called|\bcall\s+me|\bthis\s+is|"
    r"\bi'?m|\bi\s+am|\bsigned|\bregards,?|\bcheers,?|\bbest,?|\bsincerely,?|\bthanks,|\b-{1,2}|"
    r"\bmein\s+name\s+ist|\bich\s+hei(?:ß|ss)e|\bich\s+bin|\bnennt?\s+mich|\bgrü(?:ß|ss)e,?|\blg,?|\bvg,?|\bmfg,?|"
    r"\bmr|\bmrs|\bms|\bmiss|\bmx|\bdr|\bprof|\bsir|\bmadam|\bherr|\bherrn|\bfrau|\bhr|\bfr|\bdear|\bliebe|\blieber)"
    r"\.?[ \t]*$",
    re.IGNORECASE,
)
_TITLE_CUE = re.compile(
    r"(?:\bmr|\bmrs|\bms|\bmiss|\bmx|\bdr|\bprof|\bsir|\bherr|\bherrn|\bfrau|\bhr|\bfr|\bname\s+is|\bname\s*:|"
    r"\bname\s*\?|\bnamed(?:\s+(?:him|her|them|it))?|\bcalled(?:\s+(?:him|her|them|it))?|\bhei(?:ß|ss)t|"
    r"\bmein\s+name\s+ist|\bich\s+hei(?:ß|ss)e|\bcall\s+me|\bnennt?\s+mich)\.?[ \t]*$",
    re.IGNORECASE,
)
_WEAK_CUES = re.compile(
    r"(?:\bhey|\bhi|\bhello|\bhiya|\byo|\bthanks|\bthank\s+you|\bthx|\bty|\bbye|\bmorning|\bevening|"
    r"\bask|\basked|\btell|\btold|\bsays|\bsaid|\bwrites|\bwrote|\breplied|\bsagt|\bsagte|\bmeint|'s\s+name|\bping|\bpinged|\bcc|\bemail|\bemailed|\bcall|\bcalled|\bmessage|\bdm|"
    r"\bkid|\bson|\bdaughter|\bwife|\bhusband|\bbrother|\bsister|\bfriend|\bcolleague|\bcoworker|"
    r"\bboss|\bmanager|\bpartner|\bkollege|\bkollegin|\bchef|\bchefin|\bintern|\btrainee|"
    r"\bteammate|\bpraktikant(?:in)?|\bazubi|\bthat\s+you|\bare\s+you|\bsee\s+you|"
    r"\bmeet|\bmet|\bwith|\bsee|\bsaw|\band|\bfrom|\bby|\bfor|\bto|\bwelcome|\bcongrats|\bsorry|\bdear|"
    r"\bhallo|\bmoin|\bservus|\bgrüß\s+dich|\bdanke|\bfrag|\bfrage|\bsag|\bsage|\bschreib|\bruf|\bmit|\bvon|\bfür|"
    r"\bund|\bbei|\bliebe|\blieber|\bhej|\bciao|"
    r"\btalked\s+to|\btalking\s+to|\bspoke\s+(?:to|with)|\bspeak\s+(?:to|with)|\bchatted\s+with|"
    r"\bmeeting\s+with|\bcall\s+with|\baccount\s+holder|\bübernimmt|\bvertritt|"
    r"\b(?:konto)?inhaber(?:in)?|\bfwd\s+from|\bforwarded\s+from|\bmessage\s+from|\bmail\s+from|"
    r"\bnachricht\s+von|\bgeht\s+an|\bging\s+an|\bgoes\s+to|\bdanke\s+an|\bdank\s+an|\blaut|"
    r"\baccording\s+to|\bpair\s+with|\bsync\s+with|\blunch\s+with|\bme\s+or|\bblame|\binvite|"
    r"\bgib|\bgebt|\bfrag\s+mal|\bfollow\s+up\s+with|\bbitte|\btermin\s+mit|\bwelcome|\bwillkommen(?:\s+im\s+team)?|"
    r"\bshoutout\s+to|\bkunde|\bkundin|@)[ \t,]*$",
    re.IGNORECASE,
)
_PERSON_OBJECT_AFTER = re.compile(
    r"\s+(?:bescheid|anrufen|zurückrufen|erreichen|einladen|informieren|anschreiben|"
    r"kontaktieren|fürs\s+\w+|zum\s+termin)\b",
    re.IGNORECASE,
)
_TALKED_AFTER = re.compile(
    r"\s+(?:gesprochen|telefoniert|geredet|geschrieben|getroffen|gechattet|abgesprochen|"
    r"about|über|wegen)\b",
    re.IGNORECASE,
)
_VOCATIVE_AFTER = re.compile(
    r",\s*(?:can|could|would|will|please|pls|you|u|i|we|do|did|are|is|have|thanks|thank|what|how|"
    r"where|when|why|kannst|könntest|bitte|hast|bist|wie|was|wo|wann|warum|danke)\b"
    # without the comma only a direct question to the person: "salla can you rebase"
    r"|\s+(?:can|could|would|will)\s+(?:you|u)\b|\s+(?:kannst|könntest|hast|bist)\s+du\b",
    re.IGNORECASE,
)
_LIST_WORDS = frozenset({"and", "und", "or", "oder", "&"})
_POSSESSIVE_PERSONAL = re.compile(
    r"['’]s\s+(?:e-?mail|address|adresse|number|phone|mobile|cell|account|birthday|wife|husband|"
    r"partner|girlfriend|boyfriend|mom|mum|mother|dad|father|kid|kids|son|daughter|brother|sister|"
    r"desk|office|laptop|calendar|manager|boss|team|idea|code|pr|commit|message|handy|nummer|"
    r"approval|permission|sign-off|signoff|feedback|input|okay|ok|review|ticket|task|"
    r"freigabe|meinung|rechner)\b",
    re.IGNORECASE,
)
_SPEAKER = re.compile(r"(?m)(?:^|(?<=\\n))[ \t]*([^\W\d_][\w'’-]{1,30}):[ \t]*(?=\S)")
_NOT_SPEAKERS = frozenset(
    _words(
        """
        note notes error warning warn info debug todo fixme update edit question answer q a re
        fyi ps tldr tl;dr summary example output input result results step steps problem solution
        reason cause fix status bot user assistant system human ai admin mod server client
        subject from to cc bcc sent date time when where why how what who update hinweis frage
        antwort fehler beispiel lösung ergebnis
        """
    )
)
# words before a capitalised product rather than a person: "switched to Ripgrep"
_TOOL_CONTEXT = frozenset(
    _words("to with via using use into onto from in on at by upgrade install the a an our my")
)
_COPULAS = frozenset({"is", "was", "has", "had", "got", "ist", "war", "hat", "hatte"})
_NAME_VERB_AFTER = re.compile(
    r"(?:'s|’s)?(?:\s+(?:just|also|already|still|finally|then|never|nur|auch|schon|noch|grad|gerade))?"
    r"\s+(is\s+from|was\s+from|comes\s+from|is\s+out|is\s+off|is\s+sick|ist\s+(?:heute\s+)?krank|"
    r"and\s+i|and\s+me|und\s+ich|will|should|owns|covers|"
    r"is|was|has|had|lives|lived|said|says|began|spent|"
    r"listed|wrote|asked|told|kommt\s+aus|ist\s+aus|"
    r"went|got|thinks|likes|loves|hates|joined|knows|replied|pinged|messaged|mentioned|emailed|"
    r"called|texted|broke|left|quit|approved|merged|reviewed|wants|needs|"
    r"ist|war|hat|hatte|wohnt|sagt|sagte|arbeitet|meint|meinte|schreibt|schrieb|fragt|fragte|"
    r"kommt|kam|will|braucht|hat's|übernimmt|springt|kümmert|reply|respond|answer|confirm|agree|"
    r"from\s+(?:support|sales|marketing|hr|legal|finance|ops|it|accounting|billing))\b"
)
_LIST_SEP = re.compile(
    r"\s*(?:,|&|\band\b|\bund\b|\bor\b|\boder\b|/)\s*|\s*,\s*(?:and|und)\s+", re.IGNORECASE
)
_STREET_WORDS = frozenset(
    (
        _EN_STREET_TYPES
        + "|"
        + _EN_STREET_TYPES_TITLE.lower()
        + "|straße|strasse|str|weg|gasse|allee|platz"
    )
    .replace("\\", "")
    .split("|")
)
# never a name, even after "Herr"/"Frau"/"Mr" (where stop-word surnames are allowed)
_FUNCTION_WORDS = frozenset(
    _words(
        """
    der die das den dem des ein eine einen einem einer und oder the a an and or of zu im am
    in mit ist is so wie als auch noch schon nicht not you your du sie er es ich
    """
    )
)
_CONTRACTION = re.compile(r"[^\W\d_]+['’](?:m|s|re|ve|ll|d|t)")
_CONNECTORS = frozenset(
    _words(
        """
    van von de der den da di du del della des le la ten ter bin ibn al el mc st. dos das zu
    vom y
    """
    )
)
_TOKEN_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*\.?")


class _Either:
    """Membership in either of two sets (without building their union)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Collection[str], b: Collection[str]) -> None:
        self.a, self.b = a, b

    def __contains__(self, item: object) -> bool:
        return item in self.a or item in self.b

    def __iter__(self) -> Iterator[str]:
        yield from self.a
        yield from self.b

    def __len__(self) -> int:
        return len(self.a) + len(self.b)


_SURNAME_SHAPE = re.compile(
    r"..(?:ov|ova|ev|eva|yev|yeva|ovich|evich|ovna|evna|sky|ski|ska|skaya|wicz|vić|vic|ić|"
    r"sson|dóttir|dottir|poulos|escu|yan|enko|chuk|oğlu|oglu|ishvili|adze|auskas|aitis|aitė|"
    r"ienė|ová|ská|bekov|khanov|iev|ieva|inen|änen|anen|onen|ainen|äinen|ič|čič|šič)$"
)


@dataclass(frozen=True)
class NameLexicon:
    """First/last name sets (casefolded) and the subset of first names safe to take alone."""

    first: frozenset[str]
    last: frozenset[str]
    core_first: frozenset[str]
    ambiguous: frozenset[str]
    #: the part of ``ambiguous`` that is never a surname after a first name either
    #: (stop words, "will", "may", "winter", ...); frequent surnames such as "miller" or
    #: "song" are only in ``ambiguous``
    words: frozenset[str] = frozenset()
    #: the part of ``words`` that is a common surname and still one right after a first
    #: name ("stefanie schneider", "roderick grant"; not "will", "may", "lang")
    surname_words: frozenset[str] = frozenset()

    def not_surname(self, low: str) -> bool:
        """``low`` cannot be a surname right after a first name."""
        return low in self.words and low not in self.surname_words

    def with_extra(self, names: Iterable[str]) -> NameLexicon:
        extra = {p.casefold() for n in names for p in re.split(r"[\s-]+", n) if len(p) >= 2}
        return NameLexicon(
            first=self.first | extra,
            last=self.last,
            core_first=self.core_first | extra,
            ambiguous=self.ambiguous - extra,
            words=self.words - extra,
            surname_words=self.surname_words,
        )


def _stop_words() -> frozenset[str]:
    from spacy.lang.de.stop_words import STOP_WORDS as DE_STOP
    from spacy.lang.en.stop_words import STOP_WORDS as EN_STOP

    extra = _words(
        """
    u ur r im ive youre dont cant wont thats ok okay lol pls plz thx ty btw idk imo tbh ya
    yep nope
    """
    )
    return frozenset(w.casefold() for w in (*EN_STOP, *DE_STOP, *extra))


@functools.cache
def stop_words() -> frozenset[str]:
    return _stop_words()


@functools.lru_cache(maxsize=65536)
def zipf(word: str) -> float:
    """Zipf frequency of a (casefolded) word in English or German, whichever is higher."""
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, "en"), zipf_frequency(word, "de"))


@functools.cache
def name_lexicon() -> NameLexicon:
    """Load faker's per-locale name lists (offline) into a :class:`NameLexicon` (cached)."""
    import faker.providers.person as person_pkg

    first: set[str] = set()
    last: set[str] = set()
    core: set[str] = set()
    for info in pkgutil.iter_modules(person_pkg.__path__):
        try:
            mod = importlib.import_module(f"faker.providers.person.{info.name}")
        except ImportError:  # pragma: no cover - a broken locale module
            continue
        provider = getattr(mod, "Provider", None)
        if provider is None:
            continue
        is_core = info.name.split("_")[0] in {"en", "de"}
        for attr in dir(provider):
            if not (attr.startswith(("first_", "last_")) and attr.endswith("names")):
                continue
            values = getattr(provider, attr)
            if not isinstance(values, (list, tuple, dict, set, frozenset)):
                continue
            target = first if attr.startswith("first") else last
            for value in values:
                if not isinstance(value, str):
                    continue
                for part in re.split(r"[\s-]+", value):
                    if len(part) >= 2 and _LATIN_NAME.match(part):
                        low = part.casefold()
                        target.add(low)
                        if is_core and target is first:
                            core.add(low)
    sw = stop_words()
    embedded = set(_AMBIGUOUS_FROM_OTHER_LOCALES.split())
    ambiguous = embedded | set(_WORDLIKE) | _DENY | sw
    ambiguous |= {w for w in first | last if len(w) <= 2}
    # never a surname after a first name either: "back", "ball"; but "singh", "hansen" can be
    words = frozenset(ambiguous - {w for w in embedded if w in last and zipf(w) < 4.3})
    # frequent English/German words that some locale lists as a name ("song", "pin")
    ambiguous |= {w for w in first | last if w not in core and zipf(w) >= 3.5}
    return NameLexicon(
        first=frozenset(first),
        last=frozenset(last),
        core_first=frozenset(core - ambiguous),
        ambiguous=frozenset(ambiguous),
        words=words,
        surname_words=frozenset(w for w in words & last if w not in sw and zipf(w) < 4.7),
    )


@dataclass(slots=True)
class _Tok:
    start: int
    end: int
    text: str
    low: str
    cap: bool
    sent_start: bool


_CODE = "\x00"


# "API-Key", "USB-Stick", "2FA-Code": the part after an acronym's hyphen is no name
_ACRONYM_BEFORE = re.compile(r"(?<![\w-])(?:[A-Z]{2,}|\w*\d\w*)$")


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        s, e = m.start(), m.end()
        word = m.group()
        if word.endswith(".") and len(word) > 2:  # keep the dot of initials ("J.")
            e -= 1
            word = word[:-1]
        lw = word.casefold()
        if (lw.endswith(("'s", "’s")) and len(lw) > 3) or lw.endswith(("'", "’")):
            cut = 2 if lw.endswith("s") else 1
            e -= cut
            word = word[:-cut]
            lw = lw[:-cut]
        j = s - 1
        while j >= 0 and text[j] in " \t\"'(«„“*_":
            j -= 1
        sent_start = j < 0 or text[j] in ".!?\n:;>"
        before = text[s - 1] if s else " "
        after = text[e : e + 2]
        if (
            before in "_/\\$="
            or (before == "-" and _ACRONYM_BEFORE.search(text, 0, s - 1) is not None)
            or (before == "." and s >= 2 and text[s - 2].isalnum())
            or after[:1] in {"_", "(", "/", "\\", "="}
            or (after[:1] == "." and after[1:2].isalpha())
        ):
            lw = _CODE + lw  # part of an identifier, path or call: never a name
        out.append(_Tok(s, e, word, lw, word[:1].isupper(), sent_start))
    return out


def _gap_ok(text: str, a: _Tok, b: _Tok) -> bool:
    """Two tokens belong to the same name: separated by one space (or a hyphen)."""
    gap = text[a.end : b.start]
    return gap in {" ", "-", ". ", "  "} and not (gap == ". " and len(a.text) > 2)


def find_persons(
    text: str,
    *,
    lexicon: NameLexicon,
    ner_spans: Sequence[tuple[int, int]] = (),
    german: bool = False,
    ner_text: str | None = None,
) -> list[Hit]:
    """Person names from NER spans, the name lexicon and chat context cues.

    ``ner_text`` is the text the NER model saw when it differs from ``text`` only in
    letter case (see :func:`truecase`); NER spans are judged on it.
    """
    toks = _tokens(text)
    if not toks:
        return []
    first, amb, core = lexicon.first, lexicon.ambiguous, lexicon.core_first
    words = lexicon.words
    # rare words shaped like surnames ("Aslakhanov", "Ólafsdóttir", "Wierzbicki") count as
    # known last names
    shaped = {t.low for t in toks if _SURNAME_SHAPE.search(t.low) and zipf(t.low) < 2.5}
    last: Collection[str] = _Either(lexicon.last, shaped) if shaped else lexicon.last
    sw = stop_words()
    n = len(toks)
    is_name: list[float] = [0.0] * n  # score per token

    def name_capable(t: _Tok) -> bool:
        return (
            t.low not in sw
            and t.low not in _DENY
            and len(t.low) >= 2
            and not t.low.startswith(_CODE)
            and not _CONTRACTION.fullmatch(t.low)
        )

    def cap_ok(t: _Tok) -> bool:
        return t.cap and not (t.text.isupper() and len(t.text) > 3 and t.low not in first)

    # --- 1. lexicon runs of capitalised tokens ("Lara Kennedy", "Archie A. Hunt", "Djevad Mitnjek")
    i = 0
    while i < n:
        t = toks[i]
        surname_only = t.low in last and t.low not in words and not t.sent_start
        if not (
            cap_ok(t) and (t.low in first or t.low in last) and (t.low not in amb or surname_only)
        ):
            i += 1
            continue
        # grow left over capitalised name-ish tokens, right over surname-ish tokens
        lo = i
        while lo > 0 and _gap_ok(text, toks[lo - 1], toks[lo]):
            p = toks[lo - 1]
            if (
                cap_ok(p)
                and name_capable(p)
                and (p.low in first or p.low in last)
                and p.low not in amb
            ):
                lo -= 1
            else:
                break
        hi = i
        while hi + 1 < n and _gap_ok(text, toks[hi], toks[hi + 1]):
            q = toks[hi + 1]
            initial = len(q.text) <= 2 and q.text[:1].isupper()
            if q.low in _CONNECTORS:
                j = hi + 1
                while j < n and toks[j].low in _CONNECTORS and j - hi <= 3:
                    j += 1
                if j < n and toks[j].cap and toks[j].low not in sw:
                    hi = j
                    continue
                break
            if q.low in _STREET_WORDS:
                break  # "Edgar Ridge Street" is a street
            if initial or (cap_ok(q) and name_capable(q) and (q.low not in amb or q.low in last)):
                hi += 1
            else:
                break
        while hi > lo and (toks[hi].low in _CONNECTORS or toks[hi].low in sw):
            hi -= 1
        run = toks[lo : hi + 1]
        has_first = any(r.low in first and r.low not in amb for r in run)
        has_last = any(r.low in last and (r.low not in amb or r.low not in words) for r in run)
        single = len(run) == 1
        accept = False
        if len(run) >= 2 and (has_first or has_last):
            accept = True
        elif single:
            r = run[0]
            if r.low in first and r.low not in amb:
                # German capitalises every noun: a lone capitalised word needs a core first name
                accept = (r.low in core) or not r.sent_start or not german
            elif r.low in last and not german and (not r.sent_start or zipf(r.low) < 2.0):
                accept = r.low not in words
        if accept:
            for k in range(lo, hi + 1):
                is_name[k] = max(is_name[k], 0.85)
        i = hi + 1

    # --- 1b. runs of capitalised words that are no dictionary words: "Zosia Czarnecka",
    #         "Nanaho K Nishiyama" (names the lexicon does not know; German nouns are words)
    def rare_cap(t: _Tok) -> bool:
        return (
            cap_ok(t)
            and name_capable(t)
            and t.low not in amb
            and t.text.isalpha()
            and len(t.low) >= 2
            and (
                t.low in first
                or t.low in last
                or (zipf(t.low) < 2.5 and not _compound(t.low) and not _cue_word(t.text))
            )
        )

    k = 0
    while k < n:
        if not rare_cap(toks[k]):
            k += 1
            continue
        j = k
        members = [k]
        while j + 1 < n and _gap_ok(text, toks[j], toks[j + 1]):
            q = toks[j + 1]
            if len(q.text) == 1 and q.text.isupper() and j + 2 < n:  # a middle initial
                j += 1
                continue
            if not rare_cap(q):
                break
            j += 1
            members.append(j)
        while j > k and j not in members:
            j -= 1
        if len(members) >= 2 and any(
            toks[mi].low in first or zipf(toks[mi].low) < 2.0 for mi in members
        ):
            for mi in range(k, j + 1):
                is_name[mi] = max(is_name[mi], 0.7)
        k = j + 1

    # --- 2. lowercase chat names: "hey john can u call me", "peter koch said"
    for k, t in enumerate(toks):
        if t.cap or is_name[k]:
            continue
        nxt = toks[k + 1] if k + 1 < n and _gap_ok(text, t, toks[k + 1]) else None
        if (
            nxt is not None
            and len(nxt.text.rstrip(".")) == 1
            and k + 2 < n
            and _gap_ok(text, nxt, toks[k + 2])
            and (t.low in first or (t.text.isalpha() and zipf(t.low) < 1.5))
            and t.low not in sw
        ):
            # "ivan m. king", "bulat g denisov": first name, initial, surname
            sur = toks[k + 2]
            if sur.low not in sw and (sur.low in last or zipf(sur.low) < 3.0):
                is_name[k] = is_name[k + 1] = is_name[k + 2] = 0.7
                continue
        if (
            nxt is not None
            and not nxt.cap
            and t.text.isalpha()
            and len(t.low) >= 3
            and t.low not in sw
            and t.low not in _DENY
            and (zipf(t.low) < 1.5 or (t.low in first and zipf(nxt.low) < 2.0))
            and nxt.low in last
            and nxt.low not in words
        ):
            # "vetle hansen": a non-word followed by a known surname
            is_name[k] = is_name[k + 1] = 0.65
            continue
        if t.low in core and t.low not in amb:
            is_name[k] = 0.7
            if nxt is not None and nxt.low in _CONNECTORS:
                j = k + 1
                while j < n and toks[j].low in _CONNECTORS and j - k <= 3:
                    j += 1
                if (
                    j < n
                    and toks[j].low not in words
                    and (toks[j].low in last or zipf(toks[j].low) < 2.0)
                ):
                    for qi in range(k + 1, j + 1):
                        is_name[qi] = 0.7
                    continue
            # surname: a known last name or a rare word ("greta rozhkova")
            if (
                nxt is not None
                and not lexicon.not_surname(nxt.low)
                and (nxt.low in last or (len(nxt.low) >= 3 and zipf(nxt.low) < 3.0))
            ):
                is_name[k + 1] = 0.7
        elif t.low in first and t.low not in amb and zipf(t.low) < 3.0:
            # a rare word that is a first name somewhere ("margrethe", "wacława")
            is_name[k] = 0.6
            if (
                nxt is not None
                and not lexicon.not_surname(nxt.low)
                and (nxt.low in last or (len(nxt.low) >= 3 and zipf(nxt.low) < 2.0))
            ):
                is_name[k + 1] = 0.6

    # --- 3. context cues: "my name is xyz", "Frau Schneider", "ask priya", "thanks, tom"
    for k, t in enumerate(toks):
        before = text[max(0, t.start - 24) : t.start]
        if (
            not name_capable(t)
            and not (t.low in _CONNECTORS and k + 1 < n)
            # "Frau Lang", "Herr Klein": after a title a known surname is one, stop word or not
            and not (
                t.low in lexicon.last
                and t.low not in _FUNCTION_WORDS
                and not t.low.startswith(_CODE)
                and _TITLE_CUE.search(before)
            )
        ):
            continue
        strong = _STRONG_CUES.search(before)
        title = _TITLE_CUE.search(before) if strong else None
        ok = bool(is_name[k]) and bool(title)  # re-run the surname extension after a title
        if is_name[k] and not ok:
            continue
        if title and t.low in _CONNECTORS:
            # "Herr van der Kint"
            j = k
            while j < n and toks[j].low in _CONNECTORS and j - k <= 3:
                j += 1
            if j < n and toks[j].cap and _gap_ok(text, toks[j - 1], toks[j]):
                for qi in range(k, j + 1):
                    is_name[qi] = 0.8
            continue
        if ok:
            pass
        elif (
            title
            and t.text.isalpha()
            # "frau kruse", "mr nadel": after a title even a word is the surname
            and (t.cap or t.low in first or t.low in last or zipf(t.low) < 4.0)
        ):
            ok = True
        elif (
            strong
            and (t.low in first or t.low in last)
            and (t.cap or t.low not in amb or t.low not in sw)
        ):
            ok = t.low not in amb or t.cap
        elif _WEAK_CUES.search(before):
            cue = _WEAK_CUES.search(before)
            cue_word = cue.group().strip(" ,\t").lower() if cue else ""
            generic = cue_word in {
                "and",
                "with",
                "from",
                "by",
                "for",
                "to",
                "see",
                "saw",
                "mit",
                "von",
                "für",
                "und",
                "bei",
            } and not (
                # "ich habe mit X gesprochen", "talked with X about": a person after all
                cue_word in {"mit", "with"} and _TALKED_AFTER.match(text, t.end)
            )
            if (
                (
                    t.low in first
                    and (t.low not in amb or (not generic and (t.cap or t.low not in words)))
                )
                # "hallo takumi, kannst du ...": greeted and then asked
                or (
                    not generic
                    and t.text.isalpha()
                    and zipf(t.low) < 3.5
                    and _VOCATIVE_AFTER.match(text, t.end) is not None
                    and (t.low not in amb or t.low in first)
                )
                or (t.cap and not t.sent_start and not generic and t.low not in amb and not german)
                or (
                    t.cap and not generic and (t.low in first or t.low in last) and not t.sent_start
                )
            ):
                ok = True
            elif not generic and t.text.isalpha() and len(t.low) >= 3 and zipf(t.low) < 2.5:
                ok = True  # "ask uğurtan", "hey priyanka": unknown but clearly not a word
        if ok:
            is_name[k] = 0.8
            # a following surname-ish token joins ("Frau Anna Schneider", "my name is jan kowalski")
            j = k
            while j + 1 < n and j - k < 2 and _gap_ok(text, toks[j], toks[j + 1]):
                q = toks[j + 1]
                initial = len(q.text) <= 2 and q.text[:1].isalpha() and j + 2 < n
                # after "my name is" / "Frau" the next non-word is the surname
                rare = len(q.low) >= 3 and zipf(q.low) < (3.0 if title is not None else 2.0)
                surname = q.low in last and (title is not None or not lexicon.not_surname(q.low))
                if (
                    initial
                    or (name_capable(q) and ((q.cap and q.low not in amb) or surname or rare))
                ) and q.low not in _DENY:
                    j += 1
                    is_name[j] = 0.8
                else:
                    break

    # --- 4. NER person spans, trimmed of greetings / cue words / lowercase function words
    ntoks = toks
    truecased = False
    if ner_text is not None and ner_text != text and len(ner_text) == len(text):
        truecased = True
        ntoks = _tokens(ner_text)
        if len(ntoks) != n:
            ntoks = toks
    tok_starts = [t.start for t in toks]
    for s, e in ner_spans:
        inside = []
        for k in range(bisect.bisect_left(tok_starts, s), n):
            if toks[k].start >= e:
                break
            if toks[k].end <= e:
                inside.append(k)
        while inside and (
            not _ner_tok_ok(ntoks[inside[0]], first, last)
            or (
                len(inside) > 1
                and toks[inside[0]].low not in first
                and toks[inside[0]].low not in last
                and zipf(toks[inside[0]].low) >= 2.0
            )
        ):
            inside.pop(0)
        while inside and not _ner_tok_ok(ntoks[inside[-1]], first, last):
            inside.pop()
        if not inside:
            continue
        span_toks = [toks[k] for k in inside]
        known_toks = [
            t for t in span_toks if (t.low in first or t.low in last) and t.low not in amb
        ]
        if (
            not known_toks
            and truecased
            and (
                any(zipf(t.low) >= 2.5 for t in span_toks)
                or (len(span_toks) < 2 and zipf(span_toks[0].low) >= 1.0)
            )
        ):
            continue  # lowercase chat: the model only saw our capitalisation, ask for more
        if not known_toks and all(
            zipf(t.low) >= (2.5 if len(span_toks) == 1 else 3.0) for t in span_toks
        ):
            continue  # "Discipline", "Guilty Pleasures", "Metallica": words, not names
        if any(t.low in _DENY for t in span_toks):
            continue
        for k in inside:
            is_name[k] = max(is_name[k], 0.85)

    # --- 5. vocative at the start of a message/sentence: "Orva, can I please speak to ..."
    for k, t in enumerate(toks):
        if is_name[k] or not t.sent_start or not name_capable(t) or t.low in amb:
            continue
        after = text[t.end : t.end + 16]
        if _VOCATIVE_AFTER.match(after) and (
            t.low in first or zipf(t.low) < (3.0 if t.cap else 1.5)
        ):
            is_name[k] = 0.7

    # "Don't go to town, Christian!" / "Thanks, Will."
    #  ... and in lowercase chat a non-word there: "kannst du das prüfen, vetle?"
    for k, t in enumerate(toks):
        if is_name[k] or t.low in _DENY or t.low in sw or not name_capable(t):
            continue
        if not (t.cap and t.low in first) and not (
            not t.cap
            and t.text.isalpha()
            and len(t.low) >= 3
            and t.low not in amb
            and (zipf(t.low) < 2.0 or (t.low in first and zipf(t.low) < 3.0))
        ):
            continue
        if text[max(0, t.start - 2) : t.start] == ", " and re.match(
            r"\s*(?:[!?.]+|$)", text[t.end :]
        ):
            is_name[k] = 0.7

    # --- 7c. a capitalised non-word in the middle of an English sentence: "Why is Rinoka so"
    if not german:
        for k, t in enumerate(toks):
            if is_name[k] or not t.cap or t.sent_start or not name_capable(t) or t.low in amb:
                continue
            if len(t.low) >= 4 and not t.text.isupper() and zipf(t.low) < 1.5 and k > 0:
                prev = toks[k - 1]
                if not prev.cap and prev.low in sw and prev.low not in _TOOL_CONTEXT:
                    is_name[k] = 0.6

    # --- 9. lists that are mostly names: "pinto, poole and velazquez", "cc anna, tom and priya"
    k = 0
    while k < n:
        members = [k]
        j = k
        while True:
            nj = j + 1
            while nj < n and toks[nj].low in _LIST_WORDS:
                nj += 1
            if nj < n and _LIST_SEP.fullmatch(text[toks[j].end : toks[nj].start]):
                members.append(nj)
                j = nj
            else:
                break
        if len(members) >= 3:
            named = [
                qi
                for qi in members
                if (toks[qi].low in first or toks[qi].low in last) and toks[qi].low not in words
            ]
            if len(named) >= 2 and len(named) >= 0.6 * len(members):
                for qi in members:
                    if qi in named or zipf(toks[qi].low) < 2.0:
                        is_name[qi] = max(is_name[qi], 0.65)
        k = j + 1

    # --- 8. speaker labels of a pasted transcript: "otniel: what a wife.\nmelanie: ..."
    speakers = list(_SPEAKER.finditer(text))
    for m in speakers:
        low = m.group(1).casefold()
        if low in sw or low in _DENY or low in _NOT_SPEAKERS or low in amb:
            continue
        known = low in first
        if not known and (len(speakers) < 2 or zipf(low) >= 2.5):
            continue
        k = bisect.bisect_left(tok_starts, m.start(1))
        if k < n and toks[k].start == m.start(1):
            is_name[k] = max(is_name[k], 0.7)

    # --- 7b. possessive before a personal noun: "Hilarion's address", "what's anna's number"
    for k, t in enumerate(toks):
        if is_name[k] or not name_capable(t) or t.text.isupper():
            continue
        if t.low in words and not (t.cap and not t.sent_start and t.low in first):
            continue  # "here's Mark's address" is a name, "Monday's meeting" is not
        if not _POSSESSIVE_PERSONAL.match(text, t.end):
            continue
        known = t.low in first or t.low in last
        if (t.cap and (known or zipf(t.low) < 2.5)) or (not t.cap and (known or zipf(t.low) < 2.0)):
            is_name[k] = 0.7

    # --- 7d. German verb-final objects: "kannst du dmytro bescheid geben", "danke an X fürs
    #         review", "bitte X zum termin einladen"
    for k, t in enumerate(toks):
        if is_name[k] or not name_capable(t) or t.text.isupper() or not t.text.isalpha():
            continue
        if t.low in amb and (t.low not in first or t.low in words):
            continue
        if not (t.low in first or zipf(t.low) < 2.5) or _compound(t.low):
            continue
        if _PERSON_OBJECT_AFTER.match(text, t.end):
            is_name[k] = 0.65

    # --- 7. an unknown word before a typical verb: "Satsita lives on ...", "Kadiev began"
    for k, t in enumerate(toks):
        if is_name[k] or not name_capable(t) or t.low in amb or t.text.isupper():
            continue
        verb = _NAME_VERB_AFTER.match(text, t.end)
        if not verb:
            continue
        if verb.group(1).casefold() in _COPULAS and zipf(t.low) >= 1.0 and t.low not in first:
            continue  # "Zoolander is a film": only person verbs say much about a rare word
        known = (t.low in first and t.low not in words) or (t.low in last and t.low not in words)
        # German capitalises every noun: there only a rare word that is no compound noun
        unknown_ok = zipf(t.low) < 3.0 if not german else zipf(t.low) < 2.0 and not _compound(t.low)
        person_verb = verb.group(1).casefold() not in _COPULAS
        if (
            (t.cap and (known or unknown_ok))
            or (not t.cap and known and zipf(t.low) < (3.5 if person_verb else 3.0))
            or (not t.cap and person_verb and t.text.isalpha() and zipf(t.low) < 2.0)
        ):
            is_name[k] = 0.65

    # --- 6. the same word elsewhere in the message ("Christian ... Christian Kjeldsen"),
    #        and list neighbours ("founders: Barajas, Mcintosh and Adams")
    names_seen = {toks[k].low for k in range(n) if is_name[k] and len(toks[k].low) >= 3}
    for k, t in enumerate(toks):
        if is_name[k] or not name_capable(t):
            continue
        if (
            t.low in names_seen
            and (t.cap or t.low not in amb)
            and (t.cap or t.low in first or t.low in last or zipf(t.low) < 3.0)
        ):
            is_name[k] = 0.7
    changed = True
    while changed:
        changed = False
        for k, t in enumerate(toks):
            if is_name[k] or not name_capable(t) or t.low in words:
                continue
            if t.cap and not ((t.low in first or t.low in last) or zipf(t.low) < 2.5):
                continue
            if not t.cap and not ((t.low in first and t.low not in amb) or zipf(t.low) < 2.0):
                continue
            lk = k - 1
            while lk >= 0 and toks[lk].low in _LIST_WORDS:
                lk -= 1
            rk = k + 1
            while rk < n and toks[rk].low in _LIST_WORDS:
                rk += 1
            left = lk >= 0 and is_name[lk] and _LIST_SEP.fullmatch(text[toks[lk].end : t.start])
            right = rk < n and is_name[rk] and _LIST_SEP.fullmatch(text[t.end : toks[rk].start])
            if left or right:
                is_name[k] = 0.7
                changed = True

    # --- 10. a word that an e-mail address of the message is made of: "sorry vignette, i sent
    #         it to vignettegladu@dayrep.com", "hi angel, ... angelmcintosh@teleworm.us"
    if "@" in text:
        locals_ = [m.group(1).casefold() for m in _EMAIL_LOCAL.finditer(text)]
        for k, t in enumerate(toks):
            if is_name[k] or not name_capable(t) or len(t.low) < 3 or not t.text.isalpha():
                continue
            if zipf(t.low) >= 4.0 and t.low not in first and t.low not in last:
                continue  # "support", "info": the e-mail is a role, not a person
            if any(
                t.low in re.split(r"[._+\-\d]+", lp) or lp.startswith(t.low) for lp in locals_
            ) and not any(t.start >= a and t.end <= b for a, b in _email_spans(text)):
                is_name[k] = 0.7

    # --- 11. double first names: "hans-uwe", "Anna-Lena" (one part found, the other a name)
    for k in range(n - 1):
        a, b = toks[k], toks[k + 1]
        if text[a.end : b.start] != "-" or bool(is_name[k]) == bool(is_name[k + 1]):
            continue
        other = b if is_name[k] else a
        if other.low in first or other.low in last:
            is_name[k] = is_name[k + 1] = max(is_name[k], is_name[k + 1])

    # --- merge adjacent name tokens into spans
    hits: list[Hit] = []
    k = 0
    while k < n:
        if not is_name[k]:
            k += 1
            continue
        j = k
        score = is_name[k]
        while j + 1 < n and is_name[j + 1] and _gap_ok(text, toks[j], toks[j + 1]):
            j += 1
            score = max(score, is_name[j])
        hits.append(Hit(PERSON, toks[k].start, toks[j].end, score))
        k = j + 1
    return hits


@functools.lru_cache(maxsize=8192)
def _compound(low: str) -> bool:
    """A compound of two ordinary words ("kontoinhaber", "lieferadresse"): a noun, no name."""
    for i in range(3, len(low) - 3):
        head, tail = low[:i], low[i:]
        if zipf(tail) >= 3.0 and (
            zipf(head) >= 3.0 or (head.endswith("s") and zipf(head[:-1]) >= 3.0)
        ):
            return True
    return False


def _cue_word(word: str) -> bool:
    return bool(_WEAK_CUES.fullmatch(word) or _STRONG_CUES.fullmatch(word))


def _ner_tok_ok(t: _Tok, first: Collection[str], last: Collection[str]) -> bool:
    if t.low in _DENY or t.low in stop_words() or t.low.startswith(_CODE):
        return False
    if _WEAK_CUES.fullmatch(t.text) or _STRONG_CUES.fullmatch(t.text):
        return t.low in first  # "Will", "Ben" are names; "Hey", "Meet" are not
    return t.cap


_FIRST_LINE_RE = re.compile(r"\A[\s?•·*>\-–{}|]*([^\n]{3,60}?)[ \t]*(?:\n|\Z)")


_LINE_LABEL = re.compile(r"([A-Za-zÄÖÜäöü][\w ]{0,24}):[ \t]*")
_NAME_LABELS = frozenset(
    _words(
        """
        name full name last name first name by from to contact customer user client attn
        attention recipient sender author owner assignee reporter cc billing address
        shipping address directed by written by kontakt kunde empfänger absender
        ansprechpartner verfasser
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


# --------------------------------------------------------------------------- Presidio wrappers

_FINDERS = {
    EMAIL: find_emails,
    MENTION: find_mentions,
    IP_ADDRESS: find_ips,
    IBAN: find_ibans,
    CREDIT_CARD: find_cards,
    URL: find_urls,
    SECRET: find_secrets,
    PHONE: find_phones,
    ADDRESS: find_addresses,
}


_NOT_INSIDE_IBANS = frozenset({PHONE, ADDRESS, CREDIT_CARD, SECRET})


class PatternFinderRecognizer(EntityRecognizer):
    """Presidio recognizer around one of this module's ``find_*`` functions."""

    def __init__(self, entity: str, language: str) -> None:
        self._finder = _FINDERS[entity]
        super().__init__(
            supported_entities=[entity],
            supported_language=language,
            name=f"chatloop_{entity.lower()}_{language}",
        )

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if entities and self.supported_entities[0] not in entities:
            return []
        hits = self._finder(text)
        if hits and self.supported_entities[0] in _NOT_INSIDE_IBANS:
            shaped = iban_shaped(text)
            hits = [h for h in hits if not any(s < h.end and h.start < e for s, e in shaped)]
        return [RecognizerResult(h.type, h.start, h.end, h.score) for h in hits]


class ChatPersonRecognizer(EntityRecognizer):
    """PERSON from spaCy NER (when the NLP engine has one) + name lexicon + chat cues."""

    def __init__(self, language: str, lexicon: NameLexicon) -> None:
        self.lexicon = lexicon
        super().__init__(
            supported_entities=[PERSON],
            supported_language=language,
            name=f"chatloop_person_{language}",
        )

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        if entities and PERSON not in entities:
            return []
        ner: list[tuple[int, int]] = []
        if nlp_artifacts is not None:
            ner = [
                (e.start_char, e.end_char)
                for e in nlp_artifacts.entities
                if e.label_ in {"PERSON", "PER"}
            ]
        hits = find_persons(
            text,
            lexicon=self.lexicon,
            ner_spans=ner,
            german=self.supported_language == "de",
            ner_text=nlp_artifacts.tokens.text if nlp_artifacts is not None else None,
        )
        return [RecognizerResult(h.type, h.start, h.end, h.score) for h in hits]


def build_recognizers(languages: Iterable[str], lexicon: NameLexicon) -> list[EntityRecognizer]:
    """One instance of every chatloop recognizer per language."""
    out: list[EntityRecognizer] = []
    for lang in languages:
        out.extend(PatternFinderRecognizer(entity, lang) for entity in _FINDERS)
        out.append(ChatPersonRecognizer(lang, lexicon))
    return out
