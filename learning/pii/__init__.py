"""Chat-aware personal-data finders and their Presidio recognizers, by entity family.

The finders are plain functions ``find_*(text) -> list[Hit]`` so that they can be used,
tested and benchmarked without an NLP pipeline; :func:`build_recognizers` wraps them as
Presidio recognizers for one language each, which is how :mod:`learning.anonymize` plugs
them into an ``AnalyzerEngine``.

Modules (each owns one family):

``base``        entity type names, :class:`Hit`, the shared checks (checksums come from
                ``python-stdnum``: IBAN mod-97, Luhn), entropy of random tokens
``contact``     e-mail addresses, platform mentions and ``@handles``, IP addresses
``numbers``     IBANs, card numbers, phone numbers (validated with ``phonenumbers``)
``urls``        URLs outside the allow-list of public domains, secrets
``addresses``   streets (English, German with or without a street word), PO boxes,
                postcode + place, places that locate a person
``dates``       dates of birth (numeric, ISO and written out, English and German)
``handles``     user names in handles, paths and e-mail-like identifiers
``lexicon``     the name lexicon (faker's per-locale name lists) and name tokens
``persons``     person names: lexicon, context cues, spaCy NER spans, chat shapes
``chat``        contact-card name lines, truecasing lowercase chat, participants
``recognizers`` the Presidio wrappers

What this package does not know: pseudonyms, replacement and languages of a message
(that is :mod:`learning.anonymize`).
"""

from __future__ import annotations

from learning.pii.base import (
    ADDRESS,
    CREDIT_CARD,
    DATE_OF_BIRTH,
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
    iban_ok,
    luhn_ok,
)
from learning.pii.chat import is_lowercase_chat, participant_patterns, signature_names, truecase
from learning.pii.lexicon import NameLexicon, name_lexicon, zipf
from learning.pii.recognizers import build_recognizers
from learning.pii.urls import DEFAULT_URL_ALLOW_DOMAINS

__all__ = [
    "ADDRESS",
    "CREDIT_CARD",
    "DATE_OF_BIRTH",
    "DEFAULT_URL_ALLOW_DOMAINS",
    "EMAIL",
    "ENTITY_TYPES",
    "IBAN",
    "IP_ADDRESS",
    "MENTION",
    "PERSON",
    "PHONE",
    "SECRET",
    "URL",
    "Hit",
    "NameLexicon",
    "build_recognizers",
    "iban_ok",
    "is_lowercase_chat",
    "luhn_ok",
    "name_lexicon",
    "participant_patterns",
    "signature_names",
    "truecase",
    "zipf",
]
