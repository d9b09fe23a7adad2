"""Benchmark: chatloop's anonymizer vs. Presidio's default set-up, side by side.

Run: ``python -m learning.bench_anonymize [--n 500] [--quick] [--split test|dev] [--seed S]``

Data (seeded, labelled, built fresh each run; nothing downloaded):

* English sentences from ``presidio-evaluator``'s ``PresidioSentenceFaker`` (its own
  templates; person records restricted to countries whose address/phone formats are in
  scope: English- and German-speaking ones; the hospital provider, which would query the
  network, is left out),
* the same kind of sentences lowercased (chat style),
* English chat messages from this module's templates (slack-ish: lowercase names,
  mentions, tokens, keys, plus PII-free chatter that must stay untouched),
* German chat messages from this module's German templates with ``faker`` ``de_DE`` values.

Held-out evaluation: ``--split dev`` (seed 7) is what the recognizers were tuned on;
``--split test`` (seed 20240, the default) draws different sentences from the same
templates and fake-value sources, and is what is reported. ``--templates odd|even``
restricts every template list to one half, to see how results carry over to sentence
shapes not tuned on (tuning first used only the even half: on the then unseen odd half
the anonymizer had recall 0.862 / precision 0.949 vs. Presidio 0.443 / 0.589).

Scoring (entity level, both systems on exactly the same sentences):

* Gold types in scope: PERSON, EMAIL, PHONE, ADDRESS, IBAN, CREDIT_CARD, IP_ADDRESS, URL,
  SECRET, MENTION. Other gold labels (GPE, ORGANIZATION, DATE_TIME, TITLE, AGE, NRP,
  ZIP_CODE, DOMAIN_NAME, US_DRIVER_LICENSE, US_SSN) are *don't care* regions.
* Compatible types: the same type; PERSON~MENTION and URL~SECRET are also compatible.
* A gold span counts as **found** when predicted spans of a compatible type cover at
  least 50% of its letters and digits.
* A predicted span is a **true positive** when at least 50% of its letters and digits
  are covered by compatible gold spans; it is *ignored* when 50% lie in a don't-care
  region; otherwise it is a **false positive** (this includes a wrong type).
* recall = found gold / gold; precision = TP / (TP + FP); per type likewise, plus
  ``PERSON_lowercase`` = recall on person names in all-lowercase sentences.
* Presidio type names are mapped to ours: EMAIL_ADDRESS→EMAIL, PHONE_NUMBER→PHONE,
  IBAN_CODE→IBAN, LOCATION→ADDRESS (Presidio has no street-address recognizer),
  PERSON, CREDIT_CARD, IP_ADDRESS, URL unchanged; its other types are ignored.
  Presidio's default supports English only, so it analyses German text as "en".
* msgs/s: wall time of the analysis calls over all sentences after a warm-up; ours with
  its batch API (``Anonymizer.detect_many``), Presidio with its default per-message
  ``AnalyzerEngine.analyze``. Model loading is excluded for both.

The LAST line printed is one JSON object:
``{"ours": {"recall", "precision", "msgs_per_s", "per_type"}, "presidio": {...}, "n": N}``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import string
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

IN_SCOPE = (
    "PERSON", "EMAIL", "PHONE", "ADDRESS", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "URL", "SECRET",
    "MENTION",
)  # fmt: skip
GOLD_MAP = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "STREET_ADDRESS": "ADDRESS",
    "IBAN_CODE": "IBAN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IP_ADDRESS": "IP_ADDRESS",
}
PRESIDIO_MAP = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IBAN_CODE": "IBAN",
    "CREDIT_CARD": "CREDIT_CARD",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "LOCATION": "ADDRESS",
}
COMPATIBLE = {
    "PERSON": {"PERSON", "MENTION"},
    "MENTION": {"PERSON", "MENTION"},
    "URL": {"URL", "SECRET"},
    "SECRET": {"URL", "SECRET"},
}
RECORD_COUNTRIES = {"US", "GB", "CA", "AU", "NZ", "IE", "ZA", "DE", "AT", "CH"}


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]]  # (type, start, end); type "IGNORE" = don't care
    source: str
    lowercase: bool = False


# --------------------------------------------------------------------------- templates

# English chat templates. {placeholders} are filled with seeded fake values.
CHAT_EN: list[str] = [
    "hey {first} can u call me at {phone}",
    "thx {first}!! that fixed it",
    "ask {first} {last} about the deploy, he knows the config",
    "my email is {email}, send the invite there pls",
    "pls send the report to {email} before friday",
    "{first} said the build is broken again",
    "cc {first} — can you review the PR?",
    "reset link: {url_token} (expires in 1h)",
    "use this key for staging: {secret}",
    "the db password: {password}",
    "{mention} can you look at the failing job?",
    "ping {mention} when you're back",
    "server ip is {ip}, ssh in as admin",
    "pls wire it to iban {iban}",
    "my card {card} got declined on checkout",
    "i live at {address_en}, deliveries go there",
    "meet me at {address_en} tomorrow",
    "hi im {first}, new on the team",
    "talked to {first} {last} yesterday, she'll handle it",
    "{first} {last} <{email}> wants access to the repo",
    "reach me on {phone} after 6",
    "whats {first}'s number? i have {phone}",
    "here's the token {secret} dont share it",
    "github token {secret} leaked in the logs, rotate it",
    "invite link {url_token}",
    "the vpn endpoint is {ip6}",
    "see you on monday, jira board is updated",
    "will you merge it? may i ask why the tests fail",
    "docs are at {url_plain}",
    "commit 3f2a9c1 fixed the flaky test, version 2.4.1 is out",
    "standup at 10:30, then planning at 2pm",
    "the build on main passed, deploying to prod now",
    "anyone know why docker compose hangs on mac?",
    "kubernetes pod keeps restarting, oom killed i think",
    "lol same, slack is slow today",
    "thanks everyone for the quick turnaround!",
    "good morning team, happy friday",
    "can someone approve my merge request?",
    "python 3.12 broke our numpy pin",
    "the meeting moved to thursday 3pm",
    "order #48213 shipped on 2024-05-12",
    "error: connection refused on port 5432",
    "we hit the rate limit of 4096 tokens per minute",
    "i'll be out of office until next week",
    "yo {first} u coming to lunch?",
    "{first} and {first2} are on call this week",
    "dm {first} for the vpn config",
    "forwarding to {first}, she owns billing",
    "call {first} at {phone} if prod is down",
    "my name is {first} {last} and my email is {email}",
]

# German templates: names, addresses, phones, IBANs etc. plus PII-free chatter.
CHAT_DE: list[str] = [
    "Hallo {first}, kannst du mich unter {phone} zurückrufen?",
    "Mein Name ist {first} {last}, ich wohne in der {address_de}.",
    "Bitte überweise das Geld auf mein Konto {iban}.",
    "Schick die Rechnung bitte an {email}, danke!",
    "hey {first} kannst du mal drüberschauen?",
    "Frag mal {first} {last}, der kennt sich mit dem Server aus.",
    "Meine Adresse ist {address_de}, Lieferung bitte bis Freitag.",
    "Ruf mich an: {phone}",
    "Die IP vom Server ist {ip}, Login wie immer.",
    "Danke {first}, das hat geholfen!",
    "Frau {last} hat das Ticket übernommen.",
    "Herr {last} ruft morgen zurück.",
    "Das Passwort ist {password_de}, bitte nicht weitergeben.",
    "Hier der Token: {secret}",
    "Meine Kreditkarte {card} wurde abgelehnt.",
    "Ich bin {first} und neu im Team.",
    "{mention} kannst du den Build prüfen?",
    "Der Link zum Zurücksetzen: {url_token}",
    "Treffen wir uns in der {address_de}?",
    "Grüße, {first}",
    "Wir treffen uns am Montag um 10 Uhr im Konferenzraum.",
    "Der Drucker im zweiten Stock ist schon wieder kaputt.",
    "Das Deployment auf Kubernetes schlägt fehl, weil das Image fehlt.",
    "Bitte die Datei an die Buchhaltung weiterleiten.",
    "Vielen Dank für die schnelle Antwort!",
    "Die Besprechung wurde auf Donnerstag verschoben.",
    "Kann jemand meinen Merge Request freigeben?",
    "Der Server läuft wieder, danke an alle.",
    "Wer hat heute Rufbereitschaft?",
    "Version 2.4.1 ist raus, bitte testen.",
    "schreib {first} mal an, die weiß das",
    "{first} {last} hat gekündigt, ihre Mail war {email}",
    "Bestellung an {address_de} geschickt, Tel. {phone}",
    "Meine Handynummer ist {phone}.",
    "IBAN: {iban}, Kontoinhaber {first} {last}",
    "Liebe {first}, anbei die Unterlagen.",
    "moin {first}, alles klar bei dir?",
    "Die Konfiguration liegt unter {url_plain}",
    "Ich habe mit {first} gesprochen, sie kümmert sich darum.",
    "Die Zugangsdaten: Benutzer admin, Passwort: {password_de}",
]

_WORDS = string.ascii_letters + string.digits
_UPPER_DIGITS = string.ascii_uppercase + string.digits


class Filler:
    """Seeded fake values for the chat templates."""

    def __init__(self, seed: int, locale: str) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker(locale)
        self.fake.seed_instance(seed)
        self.fake_en = Faker("en_US")
        self.fake_en.seed_instance(seed + 1)
        # international names, as in a real team
        self.name_fakers = [
            Faker(loc)
            for loc in (
                "en_US",
                "en_GB",
                "de_DE",
                "fr_FR",
                "it_IT",
                "pl_PL",
                "es_ES",
                "en_IN",
                "nl_NL",
                "tr_TR",
            )
        ]
        for k, f in enumerate(self.name_fakers):
            f.seed_instance(seed + 10 + k)

    def _tok(self, n: int) -> str:
        return "".join(self.rng.choice(_WORDS) for _ in range(n))

    def value(self, key: str) -> tuple[str, str | None]:
        f, r = self.fake, self.rng
        nf = r.choice(self.name_fakers) if f is self.fake else f
        if key in {"first", "first2"}:
            return nf.first_name(), "PERSON"
        if key == "last":
            return nf.last_name(), "PERSON"
        if key == "email":
            return f.email(), "EMAIL"
        if key == "phone":
            return r.choice(
                [
                    f.phone_number(),
                    self.fake_en.phone_number(),
                    f"+49 1{r.randint(50, 79)} {r.randint(1000000, 99999999)}",
                    f"+44 7{r.randint(100, 999)} {r.randint(100000, 999999)}",
                ]
            ), "PHONE"
        if key == "address_en":
            return self.fake_en.street_address() + r.choice(
                ["", ", " + self.fake_en.city()]
            ), "ADDRESS"
        if key == "address_de":
            from faker import Faker

            de = Faker("de_DE")
            de.seed_instance(r.randint(0, 10**9))
            return de.street_address() + r.choice(["", f", {de.postcode()} {de.city()}"]), "ADDRESS"
        if key == "iban":
            from faker import Faker

            loc = r.choice(["de_DE", "de_AT", "en_GB", "nl_NL", "fr_FR"])
            fk = Faker(loc)
            fk.seed_instance(r.randint(0, 10**9))
            iban = fk.iban()
            if r.random() < 0.5:
                iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
            return iban, "IBAN"
        if key == "card":
            card = self.fake_en.credit_card_number()
            if r.random() < 0.4 and len(card) == 16:
                card = " ".join(card[i : i + 4] for i in range(0, 16, 4))
            return card, "CREDIT_CARD"
        if key == "ip":
            return self.fake_en.ipv4(), "IP_ADDRESS"
        if key == "ip6":
            return self.fake_en.ipv6(), "IP_ADDRESS"
        if key == "url_token":
            host = self.fake_en.domain_name()
            return r.choice(
                [
                    f"https://{host}/reset/{self._tok(32)}",
                    f"https://{host}/invite?token={self._tok(24)}",
                    f"https://app.{host}/login?email={self.fake_en.user_name()}%40{host}"
                    f"&code={r.randint(100000, 999999)}",
                    f"https://{host}/s/{self._tok(22)}",
                    f"https://{host}/api/export?api_key={self._tok(28)}",
                ]
            ), "URL"
        if key == "url_plain":
            return r.choice(
                [
                    "https://docs.python.org/3/library/re.html",
                    "https://github.com/org/repo/pull/1423",
                    "https://wiki.example.org/display/OPS/Runbook",
                    "https://kubernetes.io/docs/concepts/",
                ]
            ), None
        if key == "secret":
            return r.choice(
                [
                    "sk-" + self._tok(40),
                    "sk-proj-" + self._tok(36),
                    "xoxb-"
                    + f"{r.randint(10**11, 10**12)}-{r.randint(10**11, 10**12)}-"
                    + self._tok(24),
                    "ghp_" + self._tok(36),
                    "AKIA"
                    + "".join(r.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
                    self._tok(40),
                ]
            ), "SECRET"
        if key == "password":
            return self.fake_en.password(length=r.randint(8, 14)), "SECRET"
        if key == "password_de":
            return self.fake.password(length=r.randint(8, 14)), "SECRET"
        if key == "mention":
            return r.choice(
                [
                    "<@U" + "".join(r.choice(_UPPER_DIGITS) for _ in range(9)) + ">",
                    f"<@!{r.randint(10**16, 10**18)}>",
                    f"<@{r.randint(10**16, 10**18)}>",
                ]
            ), "MENTION"
        raise KeyError(key)


def fill(template: str, filler: Filler) -> tuple[str, list[tuple[str, int, int]]]:
    out: list[str] = []
    spans: list[tuple[str, int, int]] = []
    pos = 0
    length = 0
    import re

    for m in re.finditer(r"\{(\w+)\}", template):
        lit = template[pos : m.start()]
        out.append(lit)
        length += len(lit)
        value, typ = filler.value(m.group(1))
        if typ:
            spans.append((typ, length, length + len(value)))
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans


def _split(items: Sequence[str], which: str) -> list[str]:
    if which == "all":
        return list(items)
    return [t for i, t in enumerate(items) if (i % 2 == 0) == (which == "even")]


def _presidio_samples(n: int, seed: int, split: str, lowercase: bool) -> list[Sample]:
    import pandas as pd
    from presidio_evaluator.data_generator import (
        PresidioSentenceFaker,
        presidio_templates_file_path,
    )
    from presidio_evaluator.data_generator.faker_extensions import datasets
    from presidio_evaluator.data_generator.presidio_sentence_faker import (
        presidio_additional_entity_providers,
    )

    templates = _split(
        [ln.strip() for ln in presidio_templates_file_path.read_text().splitlines() if ln.strip()],
        split,
    )
    random.seed(seed)  # load_fake_person_df samples middle initials with `random`
    df = datasets.load_fake_person_df()
    df = df[df["country_code"].isin(RECORD_COUNTRIES)].reset_index(drop=True)
    providers = [
        p for p in presidio_additional_entity_providers if p.__name__ != "HospitalProvider"
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        faker = PresidioSentenceFaker(
            locale="en_US",
            lower_case_ratio=0.0,
            sentence_templates=templates,
            entity_providers=providers,
            base_records=pd.DataFrame(df),
            random_seed=seed,
        )
        generated = faker.generate_new_fake_sentences(n)
    out: list[Sample] = []
    for s in generated:
        text = s.full_text
        spans = [
            (GOLD_MAP.get(sp.entity_type, "IGNORE"), sp.start_position, sp.end_position)
            for sp in s.spans
        ]
        if lowercase:
            low = text.lower()
            if len(low) != len(text):
                continue
            text = low
        out.append(Sample(text, spans, "presidio_lower" if lowercase else "presidio_en", lowercase))
    return out


def build_dataset(n: int, seed: int, split: str = "all") -> list[Sample]:
    """n sentences: 40% Presidio EN, 20% Presidio EN lowercased, 20% EN chat, 20% DE chat."""
    n_pres = int(n * 0.4)
    n_low = int(n * 0.2)
    n_chat = int(n * 0.2)
    n_de = n - n_pres - n_low - n_chat
    samples = _presidio_samples(n_pres, seed, split, lowercase=False)
    samples += _presidio_samples(n_low, seed + 1, split, lowercase=True)
    rng = random.Random(seed + 2)
    en_templates = _split(CHAT_EN, split)
    de_templates = _split(CHAT_DE, split)
    filler_en = Filler(seed + 3, "en_US")
    for _ in range(n_chat):
        text, spans = fill(rng.choice(en_templates), filler_en)
        low = rng.random() < 0.5
        if low and len(text.lower()) == len(text):
            text = text.lower()
        samples.append(Sample(text, spans, "chat_en", low and text == text.lower()))
    filler_de = Filler(seed + 4, "de_DE")
    for _ in range(n_de):
        text, spans = fill(rng.choice(de_templates), filler_de)
        samples.append(Sample(text, spans, "chat_de", text == text.lower()))
    return samples


# --------------------------------------------------------------------------- scoring


@dataclass
class Score:
    gold: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    tp: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, type, text)


def _mask(text: str, spans: Sequence[tuple[int, int]]) -> list[bool]:
    m = [False] * len(text)
    for s, e in spans:
        for k in range(max(0, s), min(len(text), e)):
            m[k] = True
    return m


def _coverage(text: str, start: int, end: int, mask: list[bool]) -> float:
    idx = [k for k in range(start, min(end, len(text))) if text[k].isalnum()]
    if not idx:
        return 0.0
    return sum(mask[k] for k in idx) / len(idx)


def score_sample(sample: Sample, predicted: Sequence[tuple[str, int, int]], sc: Score) -> None:
    text = sample.text
    gold = [(t, s, e) for t, s, e in sample.spans if t in IN_SCOPE]
    ignore_mask = _mask(text, [(s, e) for t, s, e in sample.spans if t not in IN_SCOPE])
    for typ, s, e in gold:
        compat = COMPATIBLE.get(typ, {typ})
        mask = _mask(text, [(ps, pe) for pt, ps, pe in predicted if pt in compat])
        keys = [typ] + (["PERSON_lowercase"] if typ == "PERSON" and sample.lowercase else [])
        ok = _coverage(text, s, e, mask) >= 0.5
        for key in keys:
            sc.gold[key] = sc.gold.get(key, 0) + 1
            sc.found[key] = sc.found.get(key, 0) + int(ok)
        if not ok:
            sc.errors.append(("FN", typ, f"{text[s:e]!r} in {text!r}"))
    for typ, s, e in predicted:
        if typ not in IN_SCOPE:
            continue
        compat = COMPATIBLE.get(typ, {typ})
        mask = _mask(text, [(gs, ge) for gt, gs, ge in gold if gt in compat])
        if _coverage(text, s, e, mask) >= 0.5:
            sc.tp[typ] = sc.tp.get(typ, 0) + 1
        elif _coverage(text, s, e, ignore_mask) >= 0.5:
            continue
        else:
            sc.fp[typ] = sc.fp.get(typ, 0) + 1
            sc.errors.append(("FP", typ, f"{text[s:e]!r} in {text!r}"))


def summarize(sc: Score, n: int) -> dict[str, Any]:
    gold = sum(v for k, v in sc.gold.items() if k in IN_SCOPE)
    found = sum(v for k, v in sc.found.items() if k in IN_SCOPE)
    tp, fp = sum(sc.tp.values()), sum(sc.fp.values())
    per_type: dict[str, dict[str, float | int | None]] = {}
    for key in [*IN_SCOPE, "PERSON_lowercase"]:
        g = sc.gold.get(key, 0)
        t, f = sc.tp.get(key, 0), sc.fp.get(key, 0)
        if not g and not (t + f):
            continue
        per_type[key] = {
            "n": g,
            "recall": round(sc.found.get(key, 0) / g, 4) if g else None,
            "precision": round(t / (t + f), 4) if key in IN_SCOPE and (t + f) else None,
        }
    return {
        "recall": round(found / gold, 4) if gold else 0.0,
        "precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
        "msgs_per_s": round(n / sc.seconds, 1) if sc.seconds else 0.0,
        "per_type": per_type,
    }


# --------------------------------------------------------------------------- systems


def run_ours(samples: Sequence[Sample], progress: Callable[..., Any]) -> Score:
    from learning.anonymize import Anonymizer

    anonymizer = Anonymizer()
    anonymizer.detect_many(["warm up: call John at +1 555 123 4567", "hallo welt"])
    sc = Score()
    texts = [s.text for s in samples]
    chunk = 64
    preds: list[list[tuple[str, int, int]]] = []
    bar = progress(total=len(texts), desc="ours", unit="msg")
    for i in range(0, len(texts), chunk):
        t0 = time.perf_counter()
        hits = anonymizer.detect_many(texts[i : i + chunk])
        sc.seconds += time.perf_counter() - t0
        preds.extend([[(h.type, h.start, h.end) for h in hs] for hs in hits])
        bar.update(len(hits))
    bar.close()
    for s, p in zip(samples, preds, strict=True):
        score_sample(s, p, sc)
    return sc


def presidio_default_analyzer() -> Any:
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from learning.anonymize import resolve_spacy_models

    # Presidio's e-mail recognizer calls tldextract.extract, which would try to download the
    # public suffix list; keep it on the list bundled with tldextract (no network at run time)
    setattr(tldextract, "extract", tldextract.TLDExtract(suffix_list_urls=()))  # noqa: B010
    model = resolve_spacy_models(["en"], None)["en"]
    engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    ).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


def run_presidio(samples: Sequence[Sample], progress: Callable[..., Any]) -> Score:
    analyzer = presidio_default_analyzer()
    analyzer.analyze("warm up: call John at +1 555 123 4567", language="en")
    sc = Score()
    bar = progress(total=len(samples), desc="presidio", unit="msg")
    preds: list[list[tuple[str, int, int]]] = []
    for s in samples:
        t0 = time.perf_counter()
        res = analyzer.analyze(s.text, language="en")
        sc.seconds += time.perf_counter() - t0
        preds.append(
            [(PRESIDIO_MAP.get(r.entity_type, r.entity_type), r.start, r.end) for r in res]
        )
        bar.update(1)
    bar.close()
    for s, p in zip(samples, preds, strict=True):
        score_sample(s, p, sc)
    return sc


# --------------------------------------------------------------------------- main


def _say(*parts: object, file: Any = None) -> None:
    stream = file if file is not None else sys.stdout
    stream.write(" ".join(str(p) for p in parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_anonymize", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--n", type=int, default=500, help="number of sentences (default 500)")
    parser.add_argument("--quick", action="store_true", help="small run (120 sentences)")
    parser.add_argument(
        "--split", choices=["test", "dev"], default="test", help="held-out test (default) or dev"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="data seed (default: 20240 for test, 7 for dev)"
    )
    parser.add_argument(
        "--errors", type=int, default=0, help="print up to N misses/false hits per system"
    )
    parser.add_argument("--no-presidio", action="store_true", help="skip the Presidio default run")
    parser.add_argument(
        "--templates", choices=["all", "even", "odd"], default="all", help="template half to use"
    )
    args = parser.parse_args(argv)
    n = 120 if args.quick else args.n
    seed = args.seed if args.seed is not None else (20240 if args.split == "test" else 7)

    from tqdm import tqdm

    warnings.filterwarnings("ignore", category=UserWarning, module="presidio_evaluator")
    samples = build_dataset(n, seed, args.templates)
    _say(
        f"{len(samples)} sentences ({args.split} split, seed {seed}, {args.templates} templates)",
        file=sys.stderr,
    )

    ours = run_ours(samples, tqdm)
    result: dict[str, Any] = {"ours": summarize(ours, len(samples))}
    pres: Score | None = None
    if not args.no_presidio:
        pres = run_presidio(samples, tqdm)
        result["presidio"] = summarize(pres, len(samples))
    result["n"] = len(samples)

    for name, sc in (("ours", ours), ("presidio", pres)):
        if sc is None:
            continue
        summ = result[name]
        _say(
            f"\n== {name}: recall {summ['recall']:.3f}  precision {summ['precision']:.3f}  "
            f"{summ['msgs_per_s']:.1f} msgs/s"
        )
        for key, v in summ["per_type"].items():
            rec = "-" if v["recall"] is None else f"{v['recall']:.3f}"
            prec = "-" if v["precision"] is None else f"{v['precision']:.3f}"
            _say(f"   {key:<17} n={v['n']:<4} recall {rec:<6} precision {prec}")
        for kind, typ, msg in sc.errors[: args.errors]:
            _say(f"   {kind} {typ}: {msg}")
    _say(json.dumps(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
