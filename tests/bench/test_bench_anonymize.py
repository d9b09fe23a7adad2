"""The anonymizer benchmark: scoring on hand-made spans, the seeded data set, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatloop.cli import app
from learning.bench_anonymize import (
    CHAT_DE_NEW,
    CHAT_DE_SEEN,
    PRESIDIO_MAP,
    Sample,
    build_dataset,
    score_sample,
    split_templates,
    summarize,
)

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
    assert s["per_type"]["PERSON"] == {"n": 1, "recall": 0.0, "precision": None}


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
    assert s["per_type"]["PERSON"] == {"n": 1, "recall": 1.0, "precision": 0.5}
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
    assert set(result) == {"ours", "presidio", "n"}
    assert result["n"] == 16
    for side in ("ours", "presidio"):
        assert {"recall", "precision", "msgs_per_s"} <= set(result[side])
        for key in ("recall", "precision"):
            assert 0.0 <= result[side][key] <= 1.0
        assert result[side]["msgs_per_s"] > 0
        assert "PERSON_lowercase" in result[side]["per_type"]


@pytest.mark.usefixtures("env")
def test_cli_no_presidio_drops_the_presidio_side() -> None:
    code, lines, err = _bench("--n", "8", "--repeat", "1", "--no-presidio", "--split", "dev")
    assert code == 0, err
    result = json.loads(lines[-1])
    assert set(result) == {"ours", "n"}
    assert result["n"] == 8


@pytest.mark.usefixtures("env")
def test_cli_uses_the_configured_ner_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOOP_ANONYMIZER_MODELS", "en:no_such_spacy_model")
    code, _, err = _bench("--n", "4", "--repeat", "1", "--no-presidio")
    assert code == 2
    assert "no_such_spacy_model" in err
