"""Clean voted chat examples before fine-tuning (pure Python + numpy, deterministic).

Input rows are :class:`Example` (one prompt/answer pair with its vote); :func:`clean`
returns the rows to train on and a :class:`CleanReport` that counts every dropped row by
reason. Steps, in order:

1. **Normalize** prompt, answer and correction: Unicode NFKC, zero-width and control
   characters removed, ``\\r\\n`` -> ``\\n``, trailing spaces stripped, runs of spaces inside
   prose collapsed (indentation and everything inside ``` fenced code blocks kept), at most
   one blank line in a row, outer whitespace trimmed.
2. **Votes**: retracted votes (``vote == 0``) are dropped (``retracted``).
3. **Staff flags**: a flagged answer is never a positive example. With a correction the
   correction replaces the answer and the row becomes a 👍 example (counted in
   ``report.corrected``); without one a 👍 row is dropped (``flagged_without_correction``)
   and a 👎 row stays a negative example.
4. **Noise**: ``empty``, ``too_short``, ``too_long``, ``no_letters`` (no letter or
   digit at all), ``repeated_chars``
   (one character or a short pattern spammed), ``machine_output`` (stack traces, log
   lines, base64/hex blobs make up most of the text).
5. **Language** (optional ``languages=``): the row's ``language`` or a cheap guess
   (``language``).
6. **Exact duplicates** across all conversations (same normalized prompt + answer,
   case- and whitespace-insensitive), which includes several people's votes on one
   reply: the rows of a group vote, the majority wins and its first row is kept, the
   others are ``duplicate``; a tie of 👍 and 👎 drops the whole group
   (``conflicting_votes``), since it teaches nothing either way.
7. **Near duplicates**: MinHash over word 3-shingles (character 5-shingles for short
   texts) with LSH banding, candidates confirmed by exact Jaccard >= ``near_dup_threshold``
   (``near_duplicate``).
8. **Per-user cap**: at most ``max_votes_per_user`` rows (and at most
   ``max_user_share`` of all rows) per user, chosen by a seeded shuffle (``user_cap``).
9. **👍/👎 balance** (optional ``balance_ratio``): the larger class is downsampled to at
   most ``balance_ratio`` x the smaller one, seeded (``balance``).

Rows are first put in a canonical order (source id, conversation, user, texts), so the
result depends only on the set of rows and ``seed``, not on the input order.

What this deliberately does NOT do: no lowercasing, no stop-word removal, no stemming or
lemmatization, no punctuation stripping, no spelling correction. Those are
bag-of-words preprocessing for classifiers; here the model is *generative* and learns to
write exactly what the training targets look like: lowercased or stemmed targets would
teach it to answer in broken text, stop words carry the grammar, and its subword
tokenizer handles raw text already. It also does not anonymize (run
:mod:`learning.anonymize` first, so that de-duplication sees the placeholders) and does
not truncate to a token budget (that belongs to the trainer's tokenizer).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from learning.language import guess_language

__all__ = [
    "DROP_REASONS",
    "CleanConfig",
    "CleanReport",
    "Example",
    "clean",
    "guess_language",
    "is_machine_output",
    "jaccard",
    "normalize_text",
]


DROP_REASONS: tuple[str, ...] = (
    "retracted",
    "flagged_without_correction",
    "empty",
    "too_short",
    "too_long",
    "no_letters",
    "repeated_chars",
    "machine_output",
    "language",
    "duplicate",
    "conflicting_votes",
    "near_duplicate",
    "user_cap",
    "balance",
)


@dataclass(frozen=True, slots=True)
class Example:
    """One voted exchange. ``vote``: +1 (👍), -1 (👎), 0 (vote retracted)."""

    conversation_id: str
    user_id: str
    prompt: str
    answer: str
    vote: int
    flagged: bool = False
    correction: str | None = None
    source_id: str = ""
    language: str | None = None


@dataclass(frozen=True)
class CleanConfig:
    """Knobs of :func:`clean`; the defaults suit chat fine-tuning data."""

    min_prompt_chars: int = 2
    min_answer_chars: int = 2
    max_chars: int = 12_000
    languages: Collection[str] | None = None
    near_dup_threshold: float = 0.8
    minhash_perms: int = 64
    minhash_bands: int = 16
    max_votes_per_user: int | None = 200
    max_user_share: float | None = None
    balance_ratio: float | None = None
    seed: int = 0


@dataclass
class CleanReport:
    """What :func:`clean` did: input/kept counts, drops by reason, corrections used."""

    input: int = 0
    kept: int = 0
    corrected: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "kept": self.kept,
            "corrected": self.corrected,
            "dropped": {r: self.dropped[r] for r in DROP_REASONS if self.dropped[r]},
        }


# --------------------------------------------------------------------------- normalization

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FENCE = re.compile(r"^\s*(```|~~~)")


def normalize_text(text: str) -> str:
    """NFKC + whitespace normalization that keeps code blocks and indentation intact."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    out: list[str] = []
    in_code = False
    blank = 0
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            out.append(line.rstrip())
            blank = 0
            continue
        if in_code:
            out.append(line.rstrip())
            continue
        stripped = line.rstrip()
        if not stripped.strip():
            blank += 1
            if blank > 1:
                continue
            out.append("")
            continue
        blank = 0
        indent = len(stripped) - len(stripped.lstrip(" \t"))
        body = re.sub(r"[ \t]{2,}", " ", stripped[indent:])
        out.append(stripped[:indent] + body)
    return "\n".join(out).strip("\n").strip()


# --------------------------------------------------------------------------- noise

_LOG_LINE = re.compile(
    r"^\s*(?:\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}|\[?\d{2}:\d{2}:\d{2}|\[?(?:TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|CRITICAL)\]?[\s:]"  # noqa: E501
    r"|at [\w.$<>]+\(.*\)$|File \".*\", line \d+|Traceback \(most recent call last\)|\w+(?:\.\w+)*(?:Error|Exception):"  # noqa: E501
    r"|Caused by:|\.\.\. \d+ more$|#\d+ 0x[0-9a-f]+|\s*\^+\s*$)"
)
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{40,}")
_HEX_TOKEN = re.compile(r"(?:0x)?[0-9a-fA-F]{32,}")
_REPEAT_CHAR = re.compile(r"(.)\1{9,}", re.DOTALL)
_REPEAT_PATTERN = re.compile(r"(.{2,6}?)\1{7,}", re.DOTALL)


def is_machine_output(text: str) -> bool:
    """Mostly stack trace / log lines / base64 or hex blobs (not a human message)."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) >= 3 and sum(bool(_LOG_LINE.match(ln)) for ln in lines) >= 0.6 * len(lines):
        return True
    compact = re.sub(r"\s+", "", text)
    if len(compact) >= 60:
        blob = sum(len(m.group()) for m in _B64_TOKEN.finditer(compact) if not m.group().isalpha())
        blob += sum(len(m.group()) for m in _HEX_TOKEN.finditer(compact))
        if blob >= 0.6 * len(compact):
            return True
    return False


def _noise_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    if not any(ch.isalnum() for ch in text):
        return "no_letters"  # only punctuation / emoji / symbols
    spam = sum(len(m.group()) for m in _REPEAT_CHAR.finditer(text))
    spam += sum(len(m.group()) for m in _REPEAT_PATTERN.finditer(text))
    if spam >= 0.5 * len(text) and not _FENCE.search(text):
        return "repeated_chars"
    if is_machine_output(text):
        return "machine_output"
    return None


# --------------------------------------------------------------------------- near duplicates

_PRIME = (1 << 61) - 1
_MASK31 = (1 << 31) - 1


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.casefold())
    if len(words) >= 8:
        return {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}
    joined = " ".join(words)
    if len(joined) <= 5:
        return {joined} if joined else set()
    return {joined[i : i + 5] for i in range(len(joined) - 4)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _h31(s: str) -> int:
    digest = hashlib.blake2b(s.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & _MASK31


class _MinHasher:
    def __init__(self, perms: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _MASK31, size=perms, dtype=np.uint64)
        self.b = rng.integers(0, _MASK31, size=perms, dtype=np.uint64)

    def signature(self, shingles: set[str]) -> np.ndarray:
        if not shingles:
            return np.zeros(len(self.a), dtype=np.uint64)
        x = np.fromiter((_h31(s) for s in sorted(shingles)), dtype=np.uint64)
        # (a * x + b) mod p with a, x < 2^31: no uint64 overflow
        vals = (np.outer(x, self.a) + self.b) % np.uint64(_PRIME)
        return vals.min(axis=0)


def _near_duplicates(
    texts: Sequence[str], threshold: float, perms: int, bands: int, seed: int
) -> set[int]:
    """Indices of texts that nearly duplicate an earlier text (first one is kept)."""
    rows = max(1, perms // bands)
    hasher = _MinHasher(rows * bands, seed)
    shingle_sets = [_shingles(t) for t in texts]
    buckets: dict[tuple[int, bytes], list[int]] = {}
    dropped: set[int] = set()
    for i, sh in enumerate(shingle_sets):
        sig = hasher.signature(sh)
        candidates: set[int] = set()
        keys = []
        for band in range(bands):
            key = (band, sig[band * rows : (band + 1) * rows].tobytes())
            keys.append(key)
            candidates.update(buckets.get(key, ()))
        if any(
            j not in dropped and jaccard(sh, shingle_sets[j]) >= threshold
            for j in sorted(candidates)
        ):
            dropped.add(i)
            continue
        for key in keys:
            buckets.setdefault(key, []).append(i)
    return dropped


# --------------------------------------------------------------------------- main entry


def _canon(text: str) -> str:
    return " ".join(text.casefold().split())


def clean(
    rows: Iterable[Example],
    *,
    config: CleanConfig | None = None,
    language_of: Callable[[str], str | None] | None = None,
) -> tuple[list[Example], CleanReport]:
    """Apply the cleaning steps of the module docstring; returns ``(kept, report)``."""
    cfg = config or CleanConfig()
    detect = language_of or guess_language
    report = CleanReport()
    items = sorted(
        rows,
        key=lambda r: (r.source_id, r.conversation_id, r.user_id, r.prompt, r.answer, r.vote),
    )
    report.input = len(items)

    def drop(reason: str) -> None:
        report.dropped[reason] += 1

    stage: list[Example] = []
    for r in items:
        if r.vote not in (-1, 0, 1):
            raise ValueError(f"vote must be -1, 0 or +1, got {r.vote!r}")
        prompt = normalize_text(r.prompt)
        answer = normalize_text(r.answer)
        correction = normalize_text(r.correction) if r.correction else None
        if r.vote == 0:
            drop("retracted")
            continue
        vote = r.vote
        if r.flagged:
            if correction:
                answer, vote = correction, 1
                report.corrected += 1
            elif vote > 0:
                drop("flagged_without_correction")
                continue
        reason = _noise_reason(prompt, cfg.min_prompt_chars, cfg.max_chars) or _noise_reason(
            answer, cfg.min_answer_chars, cfg.max_chars
        )
        if reason:
            drop(reason)
            continue
        lang = r.language
        if cfg.languages is not None:
            lang = lang or detect(prompt + "\n" + answer)
            if lang not in cfg.languages:
                drop("language")
                continue
        stage.append(
            replace(
                r, prompt=prompt, answer=answer, vote=vote, correction=correction, language=lang
            )
        )

    # exact duplicates (across conversations, and several votes on one reply): majority
    groups: dict[bytes, list[Example]] = {}
    for r in stage:
        key = hashlib.blake2b(
            f"{_canon(r.prompt)}\x00{_canon(r.answer)}".encode(), digest_size=16
        ).digest()
        groups.setdefault(key, []).append(r)
    unique: list[Example] = []
    for group in groups.values():  # insertion order: the canonical order of first rows
        net = sum(r.vote for r in group)
        if net == 0:
            for _ in group:
                drop("conflicting_votes")
            continue
        winner = next(r for r in group if (r.vote > 0) == (net > 0))
        for _ in range(len(group) - 1):
            drop("duplicate")
        unique.append(winner)

    # near duplicates
    near = _near_duplicates(
        [f"{r.prompt}\n{r.answer}" for r in unique],
        cfg.near_dup_threshold,
        cfg.minhash_perms,
        cfg.minhash_bands,
        cfg.seed,
    )
    for _ in near:
        drop("near_duplicate")
    kept = [r for i, r in enumerate(unique) if i not in near]

    # per-user cap
    rng = random.Random(cfg.seed)
    cap = cfg.max_votes_per_user
    if cfg.max_user_share is not None and kept:
        share_cap = max(1, math.floor(cfg.max_user_share * len(kept)))
        cap = share_cap if cap is None else min(cap, share_cap)
    if cap is not None:
        by_user: dict[str, list[int]] = {}
        for i, r in enumerate(kept):
            by_user.setdefault(r.user_id, []).append(i)
        remove: set[int] = set()
        for user in sorted(by_user):
            idx = by_user[user]
            if len(idx) > cap:
                shuffled = idx[:]
                rng.shuffle(shuffled)
                remove.update(shuffled[cap:])
        for _ in remove:
            drop("user_cap")
        kept = [r for i, r in enumerate(kept) if i not in remove]

    # thumbs-up / thumbs-down balance
    if cfg.balance_ratio is not None:
        pos = [i for i, r in enumerate(kept) if r.vote > 0]
        neg = [i for i, r in enumerate(kept) if r.vote < 0]
        small, large = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
        limit = math.floor(cfg.balance_ratio * len(small))
        if small and len(large) > limit:
            shuffled = large[:]
            rng.shuffle(shuffled)
            remove = set(shuffled[limit:])
            for _ in remove:
                drop("balance")
            kept = [r for i, r in enumerate(kept) if i not in remove]

    report.kept = len(kept)
    assert report.kept + report.dropped_total == report.input
    return kept, report
