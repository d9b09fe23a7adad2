"""Cold start: a first adapter that already knows how to use the answer memory.

Before any customer has voted, the loop has nothing to learn from, yet a staff
correction should help from the first day, and a small model ignores retrieved answers
unless trained to use them. :func:`cold_start` therefore trains a first adapter on a
public FAQ data set shipped on PyPI (``qary``'s data-science FAQ pairs, read from the
installed wheel, never downloaded), with the FAQ itself as the memory: prompts carry
the right entry among distractors, plus chat-style variants and no-match general-chat
cases (:mod:`learning.ragdata`). It is evaluated against the base model on held-out FAQ
pairs, asked as chat-style variants with retrieval on, gated, and registered like any
candidate (pending until a maintainer approves, unless the policy auto-promotes).

What it learns is a skill (answer with the matching approved entry, ignore the others),
not the FAQ's facts: those stay in the memory of the deployment that needs them.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from learning.errors import CycleError

MAX_ANSWER_CHARS = 400


def qary_pairs() -> list[tuple[str, str]]:
    """(question, answer) pairs of qary's FAQ files, deduplicated, short answers only."""
    import yaml

    try:
        dist = metadata.distribution("qary")
    except metadata.PackageNotFoundError as exc:
        raise CycleError("the qary wheel is not installed (make install puts it in)") from exc
    files = sorted(
        str(f) for f in dist.files or () if re.match(r"qary/data/faq/faq-.*\.yml$", str(f))
    )
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for name in files:
        data = yaml.safe_load(Path(str(dist.locate_file(name))).read_text(encoding="utf-8"))
        for item in data if isinstance(data, list) else []:
            if not isinstance(item, dict) or "Q" not in item or "A" not in item:
                continue
            q, a = str(item["Q"]).strip(), str(item["A"]).strip()
            key = re.sub(r"\W+", " ", q.casefold()).strip()
            if (
                q
                and a
                and key not in seen
                and len(a) <= MAX_ANSWER_CHARS
                and not a.lower().startswith("i don't know")
            ):
                seen.add(key)
                pairs.append((q, a))
    return pairs


def split_pairs(
    pairs: Sequence[tuple[str, str]], *, held_out: float = 0.15, limit: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train and held-out halves by a hash of the question (stable across runs)."""

    def h(q: str) -> float:
        return int(hashlib.sha256(q.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    train = [p for p in pairs if h(p[0]) >= held_out]
    test = [p for p in pairs if h(p[0]) < held_out]
    if limit:
        train = train[:limit]
    return train, test


def cold_start(
    config: Any,
    *,
    sessions: sessionmaker[Session],
    pairs: Sequence[tuple[str, str]],
    limit: int = 300,
    progress: bool = False,
) -> Any:
    """Train, evaluate, gate and register the cold-start adapter (see module doc)."""
    from learning.cycle import guarded_run

    if config.retrieval is None:
        raise CycleError("cold start needs the answer memory (retrieval) to be configured")
    train, test = split_pairs(pairs, limit=limit)
    if len(train) < 8 or not test:
        raise CycleError(f"{len(pairs)} FAQ pairs are too few for a cold start")
    return guarded_run(
        config,
        sessions=sessions,
        trigger="cold-start",
        body=lambda run_id: _cold_start(config, sessions, run_id, train, test, progress),
    )


def _cold_start(
    config: Any,
    sessions: sessionmaker[Session],
    run_id: int,
    train: list[tuple[str, str]],
    test: list[tuple[str, str]],
    progress: bool,
) -> Any:
    from learning.candidate import CandidateJob, train_evaluate_register
    from learning.cycle import active_adapter, served_index
    from learning.generalchat import training_pairs
    from learning.ragdata import Pair, chat_variants, rag_examples, rows_from_pairs

    rc = config.retrieval
    echo = config.echo or (lambda _line: None)
    echo(f"· cold start: {len(train)} FAQ pairs to train on, {len(test)} held out")
    # the memory holds every pair; the held-out ones are never trained on
    index, build = served_index(config, rc, [Pair(q, a) for q, a in [*train, *test]])
    sft = rag_examples(
        rows_from_pairs([Pair(q, a) for q, a in train]),
        index,
        system_prompt=config.system_prompt,
        top_k=rc.top_k,
        max_tokens=rc.max_tokens,
        variants=rc.variants,
        general=training_pairs(int(rc.no_match_share * len(train))),
        seed=config.seed,
    )
    rng = random.Random(config.seed + 7)
    asked = [(chat_variants(q, rng, 1) or [q])[0] for q, _ in test]
    items = [
        {"prompt": build(v), "reference": a, "slice": "faq-held-out"}
        for v, (_, a) in zip(asked, test, strict=True)
    ]
    eval_sft = [
        {"prompt": it["prompt"], "completion": [{"role": "assistant", "content": it["reference"]}]}
        for it in items[: max(8, len(items) // 2)]
    ]
    digest = hashlib.sha256(repr(sorted(train)).encode()).hexdigest()
    with sessions() as s:
        active_ref = active_adapter(s)
    return train_evaluate_register(
        config,
        sessions=sessions,
        run_id=run_id,
        work=config.work_dir / f"cold-{digest[:16]}",
        job=CandidateJob(
            version=f"cold-{digest[:8]}-r{run_id}",
            sft=sft,
            eval_sft=eval_sft,
            items=items,
            digest=digest,
        ),
        active_ref=active_ref,
        progress=progress,
    )
