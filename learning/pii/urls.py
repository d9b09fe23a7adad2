"""URLs that can identify a person, and secrets (API keys, tokens, passwords)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from learning.language import word_list
from learning.pii.base import (
    SECRET,
    URL,
    Hit,
    _trim_trailing_punct,
    iban_ok,
    looks_random,
    luhn_ok,
)

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


#: public domains whose links are kept unless they carry a personal token (the
#: anonymizer's ``url_allow_domains`` replaces this; subdomains are included)
DEFAULT_URL_ALLOW_DOMAINS: tuple[str, ...] = ("wikipedia.org", "python.org", "w3.org")
_BARE_DOMAIN_RE = re.compile(
    r"(?<![\w@.:/-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?:com|net|org|io|de|at|ch|dev|me|co|uk|eu|info|app|page|site|blog|xyz|online|tech|ly|fm|"
    r"social|link|bio)(?:/[^\s<>\"'`|\\]*)?(?![\w@-])",
    re.IGNORECASE,
)
_HOST_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^/@\s]*@)?([^/:?#\s]+)", re.IGNORECASE)


def _host(url: str) -> str:
    m = _HOST_RE.match(url)
    return m.group(1).casefold().removeprefix("www.") if m else ""


def _allowed(host: str, allow: Sequence[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in allow)


def find_urls(text: str, allow_domains: Sequence[str] = DEFAULT_URL_ALLOW_DOMAINS) -> list[Hit]:
    """Every URL outside ``allow_domains`` (profile and personal pages identify people),
    and URLs inside it that carry a personal token (reset links, ``?email=``, webhooks).
    Bare domains ("kwame-mensah.dev/cv") count as URLs; e-mail addresses do not."""
    if "." not in text:
        return []
    allow = tuple(d.casefold().removeprefix("www.") for d in allow_domains)
    hits: list[Hit] = []
    spans: list[tuple[int, int]] = []
    for m in _URL_RE.finditer(text):
        end = _trim_trailing_punct(text, m.start(), m.end())
        url = text[m.start() : end]
        spans.append((m.start(), end))
        if not _allowed(_host(url), allow) or _url_is_personal(url):
            hits.append(Hit(URL, m.start(), end, 0.95))
    for m in _BARE_DOMAIN_RE.finditer(text):
        if any(s <= m.start() < e for s, e in spans):
            continue
        end = _trim_trailing_punct(text, m.start(), m.end())
        url = text[m.start() : end]
        if not _allowed(_host(url), allow) or _url_is_personal(url):
            hits.append(Hit(URL, m.start(), end, 0.8))
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
    word_list(
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
