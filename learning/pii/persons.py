"""Person names: lexicon, context cues, spaCy NER spans and chat shapes."""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Collection, Sequence

from learning.pii.base import PERSON, Hit
from learning.pii.lexicon import (
    _CODE,
    _CONNECTORS,
    _CONTRACTION,
    _COPULAS,
    _DENY,
    _FUNCTION_WORDS,
    _LIST_SEP,
    _LIST_WORDS,
    _NAME_VERB_AFTER,
    _NOT_SPEAKERS,
    _PERSON_OBJECT_AFTER,
    _POSSESSIVE_PERSONAL,
    _SPEAKER,
    _STREET_WORDS,
    _STRONG_CUES,
    _SURNAME_SHAPE,
    _TALKED_AFTER,
    _TITLE_CUE,
    _TOOL_CONTEXT,
    _VOCATIVE_AFTER,
    _WEAK_CUES,
    NameLexicon,
    _Either,
    _gap_ok,
    _Tok,
    _tokens,
    stop_words,
    zipf,
)


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
        person_verb = verb.group(1).casefold() not in _COPULAS
        # German capitalises every noun: there a rare word that is no compound noun, and
        # a little less rare before a verb only people do ("Chihiro meint, ...")
        german_limit = 2.5 if person_verb and t.low not in _DENY else 2.0
        unknown_ok = (
            zipf(t.low) < 3.0 if not german else zipf(t.low) < german_limit and not _compound(t.low)
        )
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

    # --- 10. double first names: "hans-uwe", "Anna-Lena" (one part found, the other a name)
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
