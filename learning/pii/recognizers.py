"""Presidio recognizers around the finders, one of each per language."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from learning.pii.addresses import find_addresses
from learning.pii.base import (
    ADDRESS,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    MENTION,
    PERSON,
    PHONE,
    SECRET,
    URL,
    Hit,
)
from learning.pii.contact import find_emails, find_ips, find_mentions
from learning.pii.dates import find_dates_of_birth
from learning.pii.handles import find_handles
from learning.pii.lexicon import NameLexicon
from learning.pii.numbers import find_cards, find_ibans, find_phones, iban_shaped
from learning.pii.persons import find_persons
from learning.pii.urls import DEFAULT_URL_ALLOW_DOMAINS, find_secrets, find_urls

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
    DATE_OF_BIRTH: find_dates_of_birth,
}


_NOT_INSIDE_IBANS = frozenset({PHONE, ADDRESS, CREDIT_CARD, SECRET})


class PatternFinderRecognizer(EntityRecognizer):
    """Presidio recognizer around one of this module's ``find_*`` functions."""

    def __init__(
        self, entity: str, language: str, finder: Callable[[str], list[Hit]] | None = None
    ) -> None:
        self._finder = finder or _FINDERS[entity]
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
        hits.extend(find_handles(text, self.lexicon))
        return [RecognizerResult(h.type, h.start, h.end, h.score) for h in hits]


def build_recognizers(
    languages: Iterable[str],
    lexicon: NameLexicon,
    *,
    url_allow_domains: Sequence[str] = DEFAULT_URL_ALLOW_DOMAINS,
) -> list[EntityRecognizer]:
    """One instance of every chatloop recognizer per language; links to
    ``url_allow_domains`` (and their subdomains) are kept unless they carry a token."""
    allow = tuple(url_allow_domains)

    def urls(text: str) -> list[Hit]:
        return find_urls(text, allow)

    out: list[EntityRecognizer] = []
    for lang in languages:
        out.extend(
            PatternFinderRecognizer(entity, lang, urls if entity == URL else None)
            for entity in _FINDERS
        )
        out.append(ChatPersonRecognizer(lang, lexicon))
    return out
