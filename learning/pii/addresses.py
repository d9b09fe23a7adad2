"""Postal addresses: English and German streets, PO boxes, places that locate a person."""

from __future__ import annotations

import re

from learning.language import word_list
from learning.pii.base import (
    _EN_STREET_TYPES,
    _EN_STREET_TYPES_TITLE,
    ADDRESS,
    Hit,
    _trim_trailing_punct,
)
from learning.pii.lexicon import _DENY, stop_words, zipf

# --------------------------------------------------------------------------- postal addresses

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
    r"\b(?:P\.?\s?O\.?\s?Box|Post(?:fach| Office Box)|Box|Postbox|Pf\.?)\s*(?:no\.?\s*|nr\.?\s*)?"
    r"\d{1,7}(?:[ \t]\d{2,4}){0,3}\b"
    r"(?:,?[ \t]+(?:[A-Z]{1,2}-)?\d{4,5}(?:[ \t]+[A-ZÄÖÜ][\wäöüß-]+){1,3}"
    r"|,[ \t]*[^\W\d_][\w'’.-]+"
    r"(?-i:(?:[ \t]+[A-Z][\w'’.-]+){0,2}(?:,?[ \t]+[A-Z]{2}(?:[ \t]+\d{5})?)?))?",
    re.IGNORECASE,
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
    word_list(
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
    hits = [
        Hit(h.type, h.start, h.start + len(text[h.start : h.end].rstrip()), h.score)
        for h in _corner(text, _find_addresses(text))
    ]
    return hits + _street_postcode(text) + find_places(text)


# "Lange Reihe 12, 20099 Hamburg", "am sande 4 21335 lüneburg": any words + house number,
# anchored by a five-digit postcode and a place (German, Austrian four-digit too)
_STREET_POSTCODE_RE = re.compile(
    r"(?<![\w.,-])\d{1,4}[ \t]?[a-zA-Z]?(?:[-/]\d{1,4})?,?[ \t]+"
    r"(?:[A-Z]{1,2}-)?\d{4,5}[ \t]+([^\W\d_][\w'’.-]+)(?:[ \t]+(?:am|an|im|in|bei|ob|der)"
    r"[ \t]+[^\W\d_][\w'’.-]+|[ \t]+(?=[A-ZÄÖÜ])[^\W\d_][\w'’.-]+)?"
)
_WORD_BEFORE = re.compile(r"([^\W\d_][\w'’.-]*)[ \t]+$")


# words that end a lowercase street name read backwards ("schick es an | lange reihe 12")
_STREET_STOP = frozenset(
    word_list(
        """
    an in auf zu nach bei von für the to at in on of is my our und and oder or die der das
    den dem ist wohne wohnt lebe lebt schick schicke send sent adresse address mit with
    """
    )
)


def _street_postcode(text: str) -> list[Hit]:
    hits: list[Hit] = []
    lower = not any(ch.isupper() for ch in text)
    for m in _STREET_POSTCODE_RE.finditer(text):
        place = m.group(1)
        comma = "," in m.group()
        if (
            not place[0].isupper()
            and not comma
            and place.casefold() not in _PLACE_PREFIX
            and (not lower or zipf(place.casefold()) >= 4.0)
        ):
            continue
        end = m.end()
        if place.casefold() in _PLACE_PREFIX and m.end() == m.end(1):
            nxt = re.match(r"[ \t]+[^\W\d_][\w'’.-]+", text[end:])
            end += nxt.end() if nxt else 0
        # the street name: capitalised words before the number (German streets may have no
        # street word: "Lange Reihe"), in lowercase chat the last two non-stop words
        start, words = m.start(), 0
        while words < (2 if lower else 3):
            w = _WORD_BEFORE.search(text, max(0, start - 40), start)
            if w is None:
                break
            word = w.group(1)
            if lower and word.casefold() in _STREET_STOP and words:
                break
            if not lower and not (word[0].isupper() or word in {"am", "an", "im", "zum", "zur"}):
                break
            start, words = w.start(1), words + 1
        if words:
            hits.append(Hit(ADDRESS, start, end, 0.75))
    return hits


# --------------------------------------------------------------------------- places

# a cue that the place after it locates the writer or someone they talk about
_PLACE_CUE = re.compile(
    r"(?:\b(?:i|we|he|she|they|you)\s+(?:also\s+|still\s+|now\s+)?(?:live|lived|living|am\s+living|"
    r"are\s+living|reside|stay|grew\s+up)\s+in|\blives\s+in|\bliving\s+in|\bbased\s+(?:in|out\s+of)|"
    r"\b(?:i'?m|i\s+am|he'?s|she'?s|they'?re|we'?re|comes?|originally)\s+from|"
    r"\b(?:moved|moving|relocated|relocating)\s+(?:back\s+)?to|\bborn\s+in|\bhome\s+in|"
    r"\b(?:wohne|wohnt|wohnen|lebe|lebt|leben|wohnhaft)\s+(?:jetzt\s+|seit\s+\w+\s+|noch\s+)?in|"
    r"\b(?:komme|kommt|stamme|stammt|bin|ist)\s+(?:ursprünglich\s+)?aus|"
    r"\b(?:gezogen|ziehe|zieht|umgezogen)\s+nach|"
    r"\b(?:sind|ist|bin|zogen|zog|ziehen)\s+(?:\w+\s+){0,2}nach|\bgeboren\s+in|\baus\s+der\s+nähe\s+von|"
    r"\bnear|\bin\s+der\s+nähe\s+von|\b(?:bin|ist|sind|war|waren)\s+in)[ \t]+$",
    re.IGNORECASE,
)
_PLACE_WORD = re.compile(r"[^\W\d_][\w'’.-]*")
# words after a place cue that are not places ("i live in a flat", "i'm from support")
_NOT_PLACES = frozenset(
    word_list(
        """
    a an the my our your his her their this that there here hope fear peace town city
    village country house flat apartment home office team support sales marketing company
    work school university uni area region suburbs countryside centre center downtown
    eine einer einem einen der die das dem den meiner meinem unserer unserem stadt dorf
    wohnung haus nähe gegend land firma büro arbeit schule ausland zukunft prod production
    staging dev main master release branch cloud aws gcp azure kubernetes docker slack
    teams discord github gitlab jira python rust linux windows mac macos version
    """
    )
)


_WEAK_PLACE_CUE = re.compile(
    r"(?:\bto|\bnear|\bnach|\bnähe\s+von|\b(?:bin|ist|sind|war|waren)\s+in)[ \t]+$", re.IGNORECASE
)
# first words of multi-word place names ("new york", "bad kissingen", "st albans")
_PLACE_SUFFIX = frozenset(word_list("city town springs falls beach heights village hills"))
_PLACE_PREFIX = frozenset(
    word_list("new san santa los las st saint sankt bad neu port fort mount east west north south")
)


def find_places(text: str) -> list[Hit]:
    """Cities and towns that locate a person: "i live in leeds", "ich wohne in Bad
    Kissingen", "she moved to Springfield" (one to three words after such a cue)."""
    hits: list[Hit] = []
    for m in _PLACE_WORD.finditer(text):
        before = text[max(0, m.start() - 40) : m.start()]
        if not _PLACE_CUE.search(before):
            continue
        if any(h.start <= m.start() < h.end for h in hits):
            continue
        # after "moved to" / "near" only a name-shaped word: "moved to prod" is no place
        max_zipf = 4.0 if _WEAK_PLACE_CUE.search(before) else 6.0
        words: list[re.Match[str]] = []
        pos = m.start()
        for w in _PLACE_WORD.finditer(text, pos):
            if text[pos : w.start()].strip(" \t") or len(words) == 3:
                break  # punctuation or a line break ends the place name
            low = w.group().rstrip(".").casefold()
            cap = w.group()[0].isupper()
            if words and low in _PLACE_SUFFIX:
                words.append(w)
                break
            if low in _NOT_PLACES or (low in stop_words() and not (words and cap)):
                break
            prefix = not words and low in _PLACE_PREFIX
            after_prefix = len(words) == 1 and words[0].group().casefold() in _PLACE_PREFIX
            if words and not after_prefix and words[0].group()[0].isupper() and not cap:
                break  # "Lüneburg aufgewachsen": the place ended with its capitals
            if words and low in _PLACE_SUFFIX:
                words.append(w)
                break
            limit = max_zipf if not words else (5.6 if after_prefix else 5.0)
            if not cap and not prefix and zipf(low) >= limit:
                break
            words.append(w)
            pos = w.end()
        if words and words[-1].group().casefold() in _PLACE_PREFIX:
            words.pop()
        if words:
            hits.append(Hit(ADDRESS, words[0].start(), words[-1].end(), 0.6))
    return hits


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
