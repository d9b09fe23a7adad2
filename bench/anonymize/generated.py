"""The generated test set: presidio-evaluator's generator over templates, split by
template and by person record."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import random
import string
import warnings
from collections.abc import Sequence
from typing import Any

from faker.providers import BaseProvider

from bench.anonymize.score import IGNORE, Sample, _mask
from bench.anonymize.templates import (
    CHAT_DE_DEV,
    CHAT_DE_NEW,
    CHAT_DE_SEEN,
    CHAT_EN_DEV,
    CHAT_EN_NEW,
    CHAT_EN_SEEN,
)

# generator (Presidio) entity names -> ours; anything else is a don't-care region
GOLD_MAP = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "STREET_ADDRESS": "ADDRESS",
    "IBAN_CODE": "IBAN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "SECRET": "SECRET",
    "MENTION": "MENTION",
}
# Presidio's predicted types that count, with the type of ours they agree with
PRESIDIO_MAP = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IBAN_CODE": "IBAN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "LOCATION": "LOCATION",  # never agrees with ADDRESS, but masks like any span
    "DATE_TIME": "DATE_OF_BIRTH",  # its dates mask birth dates like ours
}
# the placeholders of this module's templates -> generator entity names
CHAT_ENTITY_TYPES = {
    "mention": "MENTION",
    "api_key": "SECRET",
    "password": "SECRET",
    "url_token": "URL",
    "ipv4": "IP_ADDRESS",
    "ipv6": "IP_ADDRESS",
    "phone_intl": "PHONE_NUMBER",
    "iban_any": "IBAN_CODE",
    "credit_card_chat": "CREDIT_CARD",
    "street_address": "STREET_ADDRESS",
}
RECORD_COUNTRIES = ("US", "GB", "CA", "AU", "NZ", "IE", "ZA", "DE", "AT", "CH")
GERMAN_COUNTRIES = ("DE", "AT", "CH")
SHARES = (
    ("presidio_en", 0.30),
    ("presidio_en_lower", 0.15),
    ("chat_en", 0.20),
    ("de", 0.20),
    ("de_lower", 0.15),
)
SEEDS = {"test": 20240, "dev": 7, "all": 7}


_WORDS = string.ascii_letters + string.digits
_UPPER_DIGITS = string.ascii_uppercase + string.digits


class ChatProvider(BaseProvider):
    """``faker`` provider of the chat values the generator has no provider for.

    Draws only from the generator's seeded ``random``, so a seeded generator gives the
    same values on every run.
    """

    def _tok(self, n: int) -> str:
        return "".join(self.random_element(_WORDS) for _ in range(n))

    def _int(self, lo: int, hi: int) -> int:
        return self.generator.random.randint(lo, hi)

    def mention(self) -> str:
        kind = self._int(0, 2)
        if kind == 0:
            return "<@U" + "".join(self.random_element(_UPPER_DIGITS) for _ in range(9)) + ">"
        return ("<@!" if kind == 1 else "<@") + str(self._int(10**16, 10**18)) + ">"

    def api_key(self) -> str:
        return str(
            self.random_element(
                [
                    "sk-" + self._tok(40),
                    "sk-proj-" + self._tok(36),
                    f"xoxb-{self._int(10**11, 10**12)}-{self._int(10**11, 10**12)}-"
                    + self._tok(24),
                    "ghp_" + self._tok(36),
                    "AKIA" + "".join(self.random_element(_UPPER_DIGITS) for _ in range(16)),
                    self._tok(40),
                ]
            )
        )

    def url_token(self) -> str:
        host = self.generator.domain_name()
        user = self.generator.user_name()
        code = self._int(10**5, 10**6 - 1)
        return str(
            self.random_element(
                [
                    f"https://{host}/reset/{self._tok(32)}",
                    f"https://{host}/invite?token={self._tok(24)}",
                    f"https://app.{host}/login?email={user}%40{host}&code={code}",
                    f"https://{host}/s/{self._tok(22)}",
                    f"https://{host}/api/export?api_key={self._tok(28)}",
                ]
            )
        )

    def phone_intl(self) -> str:
        d = self.numerify
        return str(
            self.random_element(
                [
                    f"+49 1{self._int(50, 79)} {d('#######')}{d('#' * self._int(0, 1))}",
                    f"+44 7{d('###')} {d('######')}",
                    f"+1 {d('###')} {d('###')} {d('####')}",
                    f"+41 7{self._int(5, 9)} {d('###')} {d('##')} {d('##')}",
                    f"+43 6{d('##')} {d('#######')}",
                    f"0049 {self._int(30, 89)} {d('#######')}",
                ]
            )
        )

    def iban_any(self) -> str:
        from faker import Faker

        loc = self.random_element(["de_DE", "de_AT", "de_CH", "en_GB", "nl_NL", "fr_FR"])
        fk = Faker(loc)
        fk.seed_instance(self._int(0, 10**9))
        iban = str(fk.iban())
        if self._int(0, 1):
            iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def credit_card_chat(self) -> str:
        card = str(self.generator.credit_card_number())
        if len(card) == 16 and self._int(0, 9) < 4:
            card = " ".join(card[i : i + 4] for i in range(0, 16, 4))
        return card


class FixedClockProvider(BaseProvider):
    """``date_time`` and ``year`` on a fixed range: faker's defaults end at *now*, which would
    make the data set change from day to day."""

    def date_time(self) -> datetime.datetime:
        return self.generator.date_time_between(
            start_date=datetime.datetime(1970, 1, 1), end_date=datetime.datetime(2024, 12, 31)
        )

    def year(self) -> str:
        return str(self.generator.random.randint(1970, 2024))


# --------------------------------------------------------------------------- dataset


def split_templates(templates: Sequence[str], split: str) -> list[str]:
    """``dev`` = even positions, ``test`` = odd positions, ``all`` = every template."""
    if split == "all":
        return list(templates)
    if split not in {"dev", "test"}:
        raise ValueError(f"unknown split {split!r}")
    return [t for i, t in enumerate(templates) if (i % 2 == 0) == (split == "dev")]


PASTED = {"MENTION", "SECRET", "URL"}  # machine-made values: pasted, so never lowercased


def _lower(text: str, spans: Sequence[tuple[str, int, int]]) -> str | None:
    """Chat-style lowercase (pasted mentions, keys and links kept as they are), or None
    when lowercasing would move an offset."""
    keep = _mask(text, [(s, e) for t, s, e in spans if t in PASTED])
    low = "".join(ch if keep[k] else ch.lower() for k, ch in enumerate(text))
    return low if len(low) == len(text) else None


def _generate(
    templates: Sequence[str],
    n: int,
    seed: int,
    *,
    locale: str,
    countries: Sequence[str],
    chat: bool,
    split: str,
) -> list[tuple[str, list[tuple[str, int, int]], str]]:
    """n (text, spans, template) from presidio-evaluator's generator, seeded."""
    if n <= 0 or not templates:
        return []
    # presidio-evaluator prints its defaults and trips pandas deprecation warnings
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generated = _generate_quietly(templates, n, seed, locale, countries, chat, split)
    out = []
    for s in generated:
        text = s.full_text
        spans = []
        for sp in s.spans:
            assert text[sp.start_position : sp.end_position] == str(sp.entity_value), sp
            spans.append((GOLD_MAP.get(sp.entity_type, IGNORE), sp.start_position, sp.end_position))
        out.append((text, sorted(spans, key=lambda x: x[1]), templates[s.template_id]))
    return out


def _generate_quietly(
    templates: Sequence[str],
    n: int,
    seed: int,
    locale: str,
    countries: Sequence[str],
    chat: bool,
    split: str,
) -> list[Any]:
    import pandas as pd
    from presidio_evaluator.data_generator import PresidioSentenceFaker
    from presidio_evaluator.data_generator.faker_extensions import (
        IpAddressProvider,
        OrganizationProvider,
        datasets,
    )
    from presidio_evaluator.data_generator.presidio_sentence_faker import (
        presidio_additional_entity_providers,
    )

    random.seed(seed)  # load_fake_person_df samples middle initials with `random`
    records = datasets.load_fake_person_df()
    records = records[records["country_code"].isin(countries)]
    records = records[[record_split(r) in {split, "all"} for r in records.itertuples()]]
    records = records.reset_index(drop=True)
    if locale.startswith("en"):
        providers = [
            p for p in presidio_additional_entity_providers if p.__name__ != "HospitalProvider"
        ]
    else:  # the generator's address and phone providers are en_US ones: keep faker's de_DE
        providers = [IpAddressProvider, OrganizationProvider]
    providers = [*providers, FixedClockProvider]
    mapping = dict(PresidioSentenceFaker.ENTITY_TYPE_MAPPING)
    if chat:
        providers = [*providers, ChatProvider]
        mapping.update(CHAT_ENTITY_TYPES)
    faker = PresidioSentenceFaker(
        locale=locale,
        lower_case_ratio=0.0,
        sentence_templates=list(templates),
        entity_providers=providers,
        base_records=pd.DataFrame(records),
        entity_type_mapping=mapping,
        random_seed=seed,
    )
    return list(faker.generate_new_fake_sentences(n))


def _bucket(value: object) -> str:
    """'dev' or 'test' for a value, stable across runs (not Python's salted hash)."""
    digest = hashlib.blake2b(str(value).casefold().encode(), digest_size=2).digest()
    return "dev" if digest[0] % 2 == 0 else "test"


def record_split(record: Any) -> str:
    """The split a person record belongs to: 'dev' or 'test' when its first and its last
    name fall in that split's bucket, else 'none' (dropped). No name is in both splits;
    a record's street, number and e-mail are its own, so they are in one split only."""
    keys = ("first_name", "last_name")
    buckets = {_bucket(getattr(record, k)) for k in keys}
    return buckets.pop() if len(buckets) == 1 else "none"


def build_dataset(n: int, seed: int, split: str = "test") -> list[Sample]:
    """n labelled sentences in the shares of :data:`SHARES` (see the module docstring)."""
    counts = {name: int(n * share) for name, share in SHARES}
    counts["presidio_en"] += n - sum(counts.values())
    from presidio_evaluator.data_generator import presidio_templates_file_path

    presidio_templates = split_templates(
        [ln.strip() for ln in presidio_templates_file_path.read_text().splitlines() if ln.strip()],
        split,
    )
    chat_en = split_templates(CHAT_EN_SEEN, split) + split_templates(CHAT_EN_NEW, split)
    chat_de = split_templates(CHAT_DE_SEEN, split) + split_templates(CHAT_DE_NEW, split)
    if split != "test":
        chat_en += CHAT_EN_DEV
        chat_de += CHAT_DE_DEV
    heldout = set(split_templates(CHAT_EN_NEW, "test") + split_templates(CHAT_DE_NEW, "test"))
    rng = random.Random(seed)
    samples: list[Sample] = []

    def add(
        source: str, rows: Sequence[tuple[str, list[tuple[str, int, int]], str]], lower: float
    ) -> None:
        for text, spans, template in rows:
            low = _lower(text, spans) if rng.random() < lower else None
            samples.append(
                Sample(
                    low if low is not None else text,
                    spans,
                    source,
                    lowercase=low is not None,
                    heldout=split == "test" and template in heldout,
                )
            )

    en: dict[str, Any] = {"locale": "en_US", "countries": RECORD_COUNTRIES}
    de: dict[str, Any] = {"locale": "de_DE", "countries": GERMAN_COUNTRIES}
    plan: list[tuple[str, Sequence[str], dict[str, Any], bool, float]] = [
        ("presidio_en", presidio_templates, en, False, 0.0),
        ("presidio_en_lower", presidio_templates, en, False, 1.0),
        ("chat_en", chat_en, en, True, 0.5),
        ("de", chat_de, de, True, 0.0),
        ("de_lower", chat_de, de, True, 1.0),
    ]
    for k, (source, templates, where, chat, lower) in enumerate(plan):
        rows = _generate(templates, counts[source], seed + k, chat=chat, split=split, **where)
        add(source, rows, lower)
    return samples
