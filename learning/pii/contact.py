"""E-mail addresses, platform mentions and handles, IP addresses."""

from __future__ import annotations

import ipaddress
import re

from learning.language import word_list
from learning.pii.base import EMAIL, IP_ADDRESS, MENTION, Hit

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
    word_list(
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
