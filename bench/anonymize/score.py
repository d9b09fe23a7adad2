"""Scoring of predicted spans against labelled spans (type-agnostic masking), shared by
both test sets: recall, precision, character-level figures, per type and per source, and
the share of values left readable ("leaked")."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IN_SCOPE = (
    "PERSON", "EMAIL", "PHONE", "ADDRESS", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "URL", "SECRET",
    "MENTION", "DATE_OF_BIRTH",
)  # fmt: skip
#: the types issue 10 requires a per-type recall of at least 0.90 for
REQUIRED = (
    "PERSON", "EMAIL", "PHONE", "ADDRESS", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "URL",
    "MENTION", "DATE_OF_BIRTH",
)  # fmt: skip
_PIECE = re.compile(r"[^\W_]+")
IGNORE = "IGNORE"

MAJORITY = 0.5  # a span counts when MORE than this share of its characters is covered


@dataclass
class Sample:
    text: str
    spans: list[tuple[str, int, int]]  # (type, start, end); type IGNORE = don't care
    source: str
    lowercase: bool = False
    heldout: bool = False  # from a template never used for tuning (see module docstring)
    language: str = ""  # "en" / "de" where the set knows it
    style: str = ""  # "formal" / "chat" where the set knows it


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
    leaked: bool = False  # some piece of the value is still readable (see leaked())


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
    language: str = ""
    style: str = ""
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
    res = SampleResult(
        sample.source, sample.lowercase, sample.heldout, text, sample.language, sample.style
    )
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
        res.gold.append(GoldResult(typ, found, same, text[s:e], leaked(text, s, e, pred_mask)))
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


def leaked(text: str, start: int, end: int, mask: Sequence[bool]) -> bool:
    """A value is left readable when any piece of it (a run of letters or digits) of three
    or more characters is not masked at all: "Lange Reihe 12, 20099 <ADDRESS>" leaks the
    street, "<PERSON> Okafor" the surname. Stricter than span recall."""
    for m in _PIECE.finditer(text, start, end):
        if len(m.group()) >= 3 and not any(mask[k] for k in range(m.start(), m.end())):
            return True
    return False


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
        "leaked": _ratio(sum(g.leaked for g in gold), len(gold)),
        "n_gold": len(gold),
    }


def _per_type(results: Sequence[SampleResult]) -> dict[str, dict[str, Any]]:
    gold = [g for r in results for g in r.gold]
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
            "leaked": _ratio(sum(g.leaked for g in gs), len(gs)),
        }
    low = [g for r in results if r.lowercase for g in r.gold if g.type == "PERSON"]
    per_type["PERSON_lowercase"] = {
        "n": len(low),
        "recall": _ratio(sum(g.found for g in low), len(low)),
        "precision": None,
    }
    return per_type


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
        "leaked": overall["leaked"],
        "type_agreement": _ratio(sum(g.same_type for g in found), len(found)),
    }
    per_type = _per_type(results)
    out["per_type"] = per_type
    out["per_source"] = {
        src: {
            "n": sum(r.source == src for r in results),
            **_metrics([r for r in results if r.source == src]),
        }
        for src in dict.fromkeys(r.source for r in results)
    }
    for attr in ("language", "style"):
        groups = dict.fromkeys(getattr(r, attr) for r in results if getattr(r, attr))
        if groups:
            out[f"per_{attr}"] = {
                g: {"n": sum(getattr(r, attr) == g for r in results)}
                | _metrics([r for r in results if getattr(r, attr) == g])
                for g in groups
            }
    held = [r for r in results if r.heldout]
    if held:
        out["heldout"] = {"n": len(held), **_metrics(held), "per_type": _per_type(held)}
    return out


def errors(results: Sequence[SampleResult], limit: int) -> list[str]:
    """Up to ``limit`` misses (FN) and false hits (FP), for reading."""
    out: list[str] = []
    for r in results:
        out += [f"FN {g.type}: {g.value!r} in {r.text!r}" for g in r.gold if not g.found]
        out += [f"LEAK {g.type}: {g.value!r} in {r.text!r}" for g in r.gold if g.found and g.leaked]
        out += [f"FP {p.type}: {p.value!r} in {r.text!r}" for p in r.preds if p.verdict == "fp"]
    return out[:limit]
