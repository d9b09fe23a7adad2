"""The anonymizer benchmark: scoring on hand-made spans, the seeded data set, the CLI."""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.anonymize.generated import PRESIDIO_MAP, build_dataset, record_split, split_templates
from bench.anonymize.inserted import build_inserted, census_names, make_card, make_iban
from bench.anonymize.score import IGNORE, Sample, score_sample, summarize
from bench.anonymize.templates import CHAT_DE_NEW, CHAT_DE_SEEN
from chatloop.cli import app

TEXT = "Call Anna Berg on Monday in Berlin"
#       0    5    10   15   20   25   30
ANNA_BERG = (5, 14)  # 8 letters
MONDAY = (18, 24)
BERLIN = (28, 34)


def _sample(*spans: tuple[str, int, int], text: str = TEXT, lowercase: bool = False) -> Sample:
    return Sample(text, list(spans), "hand", lowercase=lowercase)


def test_offsets_of_the_hand_made_sentence() -> None:
    assert TEXT[slice(*ANNA_BERG)] == "Anna Berg"
    assert TEXT[slice(*MONDAY)] == "Monday"
    assert TEXT[slice(*BERLIN)] == "Berlin"


def test_a_miss() -> None:
    r = score_sample(_sample(("PERSON", *ANNA_BERG)), [])
    assert [(g.type, g.found) for g in r.gold] == [("PERSON", False)]
    assert r.preds == []
    assert (r.gold_chars, r.gold_chars_masked) == (8, 0)
    s = summarize([r])
    assert s["recall"] == 0.0
    assert s["char_recall"] == 0.0
    assert s["precision"] == 0.0  # nothing predicted: no precision to claim
    assert s["char_precision"] is None
    assert s["per_type"]["PERSON"] == {"n": 1, "recall": 0.0, "precision": None, "leaked": 1.0}


def test_half_an_entity_is_not_a_hit_but_counts_per_character() -> None:
    # "Anna" is 4 of the 8 letters of "Anna Berg": not a strict majority
    r = score_sample(_sample(("PERSON", *ANNA_BERG)), [("PERSON", 5, 9)])
    assert not r.gold[0].found
    assert r.preds[0].verdict == "tp"  # all of the prediction lies in the gold span
    assert (r.gold_chars, r.gold_chars_masked) == (8, 4)
    s = summarize([r])
    assert s["recall"] == 0.0
    assert s["precision"] == 1.0
    assert s["char_recall"] == 0.5
    assert s["char_precision"] == 1.0


def test_a_majority_overlap_is_a_hit() -> None:
    # "Anna Ber" covers 7 of 8 letters; the space and the "C" of "Call" do not matter,
    # but a prediction reaching into "Call " is still more than half inside the gold span
    r = score_sample(_sample(("PERSON", *ANNA_BERG)), [("PERSON", 3, 13)])
    assert r.gold[0].found and r.gold[0].same_type
    assert r.preds[0].verdict == "tp"
    assert (r.gold_chars_masked, r.masked_chars, r.masked_chars_in_gold) == (7, 8, 7)
    s = summarize([r])
    assert s["recall"] == 1.0
    assert s["char_recall"] == 0.875
    assert s["char_precision"] == 0.875


def test_false_positive_and_dont_care() -> None:
    gold = (("PERSON", *ANNA_BERG), ("IGNORE", *BERLIN))
    preds = [("PERSON", *ANNA_BERG), ("PERSON", *MONDAY), ("ADDRESS", *BERLIN)]
    r = score_sample(_sample(*gold), preds)
    assert [p.verdict for p in r.preds] == ["tp", "fp", "ignored"]
    # masked characters: 8 of Anna Berg + 6 of Monday; Berlin is don't care
    assert (r.masked_chars, r.masked_chars_in_gold) == (14, 8)
    s = summarize([r])
    assert s["recall"] == 1.0
    assert s["precision"] == 0.5
    assert s["char_precision"] == round(8 / 14, 4)
    assert s["per_type"]["PERSON"] == {"n": 1, "recall": 1.0, "precision": 0.5, "leaked": 0.0}
    assert "ADDRESS" not in s["per_type"]  # an ignored prediction counts nowhere


def test_metrics_are_type_agnostic_but_type_agreement_is_reported() -> None:
    # Presidio's LOCATION on a street address masks it, but is not the right type
    text = "I live at 42 Baker Street now"
    sample = _sample(("ADDRESS", 10, 25), text=text)
    r = score_sample(sample, [("LOCATION", 13, 25)], PRESIDIO_MAP)
    assert r.gold[0].found and not r.gold[0].same_type
    s = summarize([r])
    assert s["recall"] == 1.0 and s["precision"] == 1.0
    assert s["type_agreement"] == 0.0
    assert s["per_type"]["LOCATION"]["precision"] == 1.0
    # Presidio's names are mapped to ours for agreement and per-type precision
    r2 = score_sample(
        _sample(("PHONE", 10, 25), text=text), [("PHONE_NUMBER", 10, 25)], PRESIDIO_MAP
    )
    assert r2.gold[0].same_type and r2.preds[0].type == "PHONE"


def test_lowercase_person_recall_and_speed() -> None:
    low = "ask anna berg"
    r1 = score_sample(_sample(("PERSON", 4, 13), text=low, lowercase=True), [("PERSON", 4, 8)])
    r2 = score_sample(_sample(("PERSON", *ANNA_BERG)), [("PERSON", *ANNA_BERG)])
    s = summarize([r1, r2], passes=[0.5, 0.25])
    assert s["per_type"]["PERSON_lowercase"] == {"n": 1, "recall": 0.0, "precision": None}
    assert s["per_type"]["PERSON"]["recall"] == 0.5
    assert s["msgs_per_s"] == 8.0  # 2 sentences, fastest pass 0.25 s
    assert s["msgs_per_s_passes"] == [4.0, 8.0]


def test_template_split_is_disjoint() -> None:
    for templates in (CHAT_DE_SEEN, CHAT_DE_NEW):
        dev, test = split_templates(templates, "dev"), split_templates(templates, "test")
        assert set(dev).isdisjoint(test)
        assert sorted(dev + test) == sorted(templates)
        assert split_templates(templates, "all") == list(templates)
    with pytest.raises(ValueError, match="split"):
        split_templates(CHAT_DE_NEW, "train")


@pytest.fixture(scope="module")
def dataset() -> list[Sample]:
    return build_dataset(60, 11, "test")


def test_dataset_is_seeded_and_deterministic(dataset: list[Sample]) -> None:
    again = build_dataset(60, 11, "test")
    assert [(s.text, s.spans, s.source, s.lowercase) for s in again] == [
        (s.text, s.spans, s.source, s.lowercase) for s in dataset
    ]
    other = build_dataset(60, 12, "test")
    assert [s.text for s in other] != [s.text for s in dataset]


def test_dataset_shape(dataset: list[Sample]) -> None:
    assert len(dataset) == 60
    sources = {s.source for s in dataset}
    assert sources == {"presidio_en", "presidio_en_lower", "chat_en", "de", "de_lower"}
    for s in dataset:
        for typ, start, end in s.spans:
            assert 0 <= start < end <= len(s.text), (s.text, typ, start, end)
        if s.source.endswith("_lower"):
            assert s.lowercase
        if s.lowercase:
            pasted = [(a, b) for t, a, b in s.spans if t in {"MENTION", "SECRET", "URL"}]
            rest = "".join(
                ch for k, ch in enumerate(s.text) if not any(a <= k < b for a, b in pasted)
            )
            assert rest == rest.lower(), s.text
    german = [s for s in dataset if s.source.startswith("de")]
    assert any(s.lowercase for s in german) and any(not s.lowercase for s in german)
    assert any(t == "PERSON" for s in german for t, _, _ in s.spans)
    assert all(not s.heldout for s in build_dataset(20, 11, "dev"))


def test_person_records_are_split_so_no_name_is_in_both() -> None:
    from presidio_evaluator.data_generator.faker_extensions import datasets

    with warnings.catch_warnings():  # presidio-evaluator trips pandas deprecations
        warnings.simplefilter("ignore")
        records = list(datasets.load_fake_person_df().itertuples())
    by_split: dict[str, set[str]] = {"dev": set(), "test": set()}
    for r in records:
        split = record_split(r)
        if split in by_split:
            by_split[split] |= {r.first_name.casefold(), r.last_name.casefold()}
    assert by_split["dev"] and by_split["test"]
    assert by_split["dev"].isdisjoint(by_split["test"])


def test_a_value_is_leaked_when_a_piece_of_it_stays_readable() -> None:
    text = "Lange Reihe 12, 20099 Hamburg"
    whole = _sample(("ADDRESS", 0, len(text)), text=text)
    street_only = score_sample(whole, [("ADDRESS", 0, 21)])
    assert street_only.gold[0].found and street_only.gold[0].leaked  # "Hamburg"
    everything = score_sample(whole, [("ADDRESS", 0, len(text))])
    assert not everything.gold[0].leaked
    assert summarize([street_only])["leaked"] == 1.0
    assert summarize([everything])["leaked"] == 0.0


# --------------------------------------------------------------------------- inserted set


def test_inserted_values_come_from_sources_the_recognizers_never_read() -> None:
    first, _ = census_names()
    dev = build_inserted(200, 5, "dev")
    test = build_inserted(200, 5, "test")
    for samples in (dev, test):
        assert {s.language for s in samples} == {"en", "de"}
        assert {s.style for s in samples} == {"formal", "chat"}
        assert any(not [t for t, _, _ in s.spans if t != IGNORE] for s in samples)  # no value
        for s in samples:
            for _, a, b in s.spans:
                assert 0 <= a < b <= len(s.text)
            if s.style == "chat":
                kept = [(a, b) for t, a, b in s.spans if t in {"URL", "MENTION"}]
                rest = "".join(
                    c for k, c in enumerate(s.text) if not any(a <= k < b for a, b in kept)
                )
                assert rest == rest.lower()
    names_in = {s.text[a:b].casefold() for s in test for t, a, b in s.spans if t == "PERSON"}
    names_dev = {s.text[a:b].casefold() for s in dev for t, a, b in s.spans if t == "PERSON"}
    assert names_in and names_in.isdisjoint(names_dev)
    assert any(n.split()[0].title() in first for n in names_in)
    assert build_inserted(50, 5, "test")[0].text == test[0].text  # seeded


def test_inserted_numbers_carry_valid_checksums() -> None:
    from stdnum import iban, luhn

    rng = random.Random(3)
    for _ in range(200):
        assert iban.is_valid(make_iban(rng))
        assert luhn.is_valid(make_card(rng).replace(" ", ""))


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CHATLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CHATLOOP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.chdir(tmp_path)


def _bench(*args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(app, ["bench", "anonymize", *args])
    return result.exit_code, result.stdout.strip().splitlines(), result.stderr


@pytest.mark.usefixtures("env")
def test_cli_last_line_is_the_side_by_side_json() -> None:
    code, lines, err = _bench("--n", "16", "--repeat", "1")
    assert code == 0, err
    result = json.loads(lines[-1])
    assert {"generated", "inserted", "headline", "notes", "split"} <= set(result)
    assert result["split"] == "test"
    for set_name in ("generated", "inserted"):
        part = result[set_name]
        assert part["n"] == 16
        for side in ("ours", "presidio"):
            assert {"recall", "precision", "msgs_per_s", "leaked"} <= set(part[side])
            for key in ("recall", "precision", "leaked"):
                assert 0.0 <= part[side][key] <= 1.0
            assert part[side]["msgs_per_s"] > 0
            assert "PERSON_lowercase" in part[side]["per_type"]
    assert set(result["inserted"]["ours"]["per_language"]) == {"en", "de"}
    assert set(result["inserted"]["ours"]["per_style"]) == {"formal", "chat"}
    assert set(result["headline"]["inserted"]) == {"ours", "presidio"}


@pytest.mark.usefixtures("env")
def test_cli_no_presidio_drops_the_presidio_side() -> None:
    code, lines, err = _bench(
        "--n", "8", "--repeat", "1", "--no-presidio", "--split", "dev", "--sets", "inserted"
    )
    assert code == 0, err
    result = json.loads(lines[-1])
    assert set(result["inserted"]) == {"ours", "n"}
    assert result["inserted"]["n"] == 8
    assert "generated" not in result and "headline" not in result  # dev is no result


@pytest.mark.usefixtures("env")
def test_cli_uses_the_configured_ner_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_ANONYMIZER_MODELS", "en:no_such_spacy_model")
    code, _, err = _bench("--n", "4", "--repeat", "1", "--no-presidio")
    assert code == 2
    assert "no_such_spacy_model" in err
