"""The answer memory at reply time: a hybrid lexical + embedding index over the
approved question/answer entries of every workspace, and retrieval into a prompt.

:class:`AnswerMemory` loads the active entries (``storage.memory.MemoryEntries``)
with their stored embeddings (of question and answer, :func:`entry_text`) into one
in-process index per workspace: a float32 matrix of unit vectors (cosine = dot
product, numpy) and BM25 statistics over the entry's question and answer words. A
question is embedded once per retrieval. Entries whose cosine similarity is at least
``min_score`` (a threshold per embedding model: cosine scales differ) are ranked by
the hybrid score ``(1 - lexical_weight) * cosine + lexical_weight * lexical``, where
``lexical`` is the BM25 score divided by the question's best possible BM25 score
(0..1); the best ``top_k`` are cut to the memory's token budget with
:func:`serving.prompt.fit_memory`. (The threshold is on the cosine so that the
lexical weight does not shift it.)

Freshness across replicas: before a retrieval (at most every
``refresh_interval_s``; 0 = every time) the index compares the table's watermark
(count, newest id, newest ``updated_at``: one aggregate query) with the one it
was built from and reloads on any change, so a correction, edit, retirement or
erasure made on any replica is seen by the next message everywhere. Entries whose
stored embedding is missing or from another model are embedded at load and the
vectors written back (:meth:`AnswerMemory.reembed_stale` does it for all up front).

One machine's index; PostgreSQL's pgvector is detected
(:func:`pgvector_available`) but not used yet: the database server this project
tests against does not offer the extension (see docs/ARCHITECTURE.md).

It knows nothing of platforms, roles or how entries are added (the bot's core
and the CLI do that through storage).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from serving.embed import Embedder, from_bytes, to_bytes
from serving.prompt import approx_tokens, fit_memory
from serving.types import MemoryItem
from storage.db import transaction
from storage.memory import MemoryEntries, Watermark
from storage.models import MemoryEntry

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = (
    "a an and are as at be by can do does for from how i if in is it me my of on or "
    "our so the to we what when where which who why will with you your "
    "der die das und ist ich wie was wo ein eine zu mit für von den dem im es"
)
_STOP = frozenset(_STOP_WORDS.split())
BM25_K1 = 1.2
BM25_B = 0.75


def entry_text(question: str, answer: str) -> str:
    """What an entry's vector embeds: its question and its answer (a paraphrase often
    shares words and meaning with the answer that the question itself lacks; on the
    dev FAQ set this lifts MiniLM's top-1 from 0.64 to 0.84)."""
    return f"{question}\n{answer}"


def words(text: str) -> list[str]:
    """Lexical terms: case-folded word characters, without common stop words."""
    return [w for w in (t.casefold() for t in _WORD.findall(text)) if w not in _STOP]


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """Retrieval behaviour (built from settings by the composition root)."""

    top_k: int = 3
    min_score: float | None = None  # None: the embedder's ``default_min_score``
    lexical_weight: float = 0.1
    max_tokens: int = 384
    refresh_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise ValueError("min_score (a cosine) must be in [-1, 1]")
        if not 0.0 <= self.lexical_weight <= 1.0:
            raise ValueError("lexical_weight must be in [0, 1]")
        if self.max_tokens < 16:
            raise ValueError("max_tokens must be >= 16")
        if self.refresh_interval_s < 0:
            raise ValueError("refresh_interval_s must be >= 0")


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """A retrieved entry with its scores."""

    entry_id: int
    workspace_id: int | None
    question: str
    answer: str
    source: str
    score: float
    cosine: float
    lexical: float

    @property
    def item(self) -> MemoryItem:
        return MemoryItem(self.entry_id, self.question, self.answer, round(self.score, 4))


@dataclass
class _Shard:
    """The index of one workspace."""

    ids: np.ndarray
    questions: list[str]
    answers: list[str]
    sources: list[str]
    matrix: np.ndarray  # (n, dim) unit rows
    term_freqs: list[Counter[str]]
    lengths: np.ndarray
    df: Counter[str] = field(default_factory=Counter)

    @property
    def avg_len(self) -> float:
        return float(self.lengths.mean()) if len(self.lengths) else 0.0

    def idf(self, term: str) -> float:
        n = len(self.ids)
        d = self.df.get(term, 0)
        return math.log(1.0 + (n - d + 0.5) / (d + 0.5))

    def lexical(self, query_terms: list[str]) -> np.ndarray:
        """BM25 of every entry divided by the query's best possible score (0..1)."""
        scores = np.zeros(len(self.ids), dtype=np.float32)
        terms = list(dict.fromkeys(query_terms))
        if not terms or not len(self.ids):
            return scores
        best = sum(self.idf(t) * (BM25_K1 + 1.0) for t in terms)
        avg = self.avg_len or 1.0
        norm = BM25_K1 * (1.0 - BM25_B + BM25_B * self.lengths / avg)
        for t in terms:
            if t not in self.df:
                continue
            tf = np.array([tfs.get(t, 0) for tfs in self.term_freqs], dtype=np.float32)
            scores += self.idf(t) * tf * (BM25_K1 + 1.0) / (tf + norm)
        return scores / best


def _shard(rows: list[tuple[MemoryEntry, np.ndarray]], dim: int) -> _Shard:
    tfs = [Counter(words(f"{r.question} {r.answer}")) for r, _ in rows]
    df: Counter[str] = Counter()
    for tf in tfs:
        df.update(tf.keys())
    return _Shard(
        ids=np.array([r.id for r, _ in rows], dtype=np.int64),
        questions=[r.question for r, _ in rows],
        answers=[r.answer for r, _ in rows],
        sources=[r.source.value for r, _ in rows],
        matrix=(np.stack([v for _, v in rows]) if rows else np.zeros((0, dim), np.float32)),
        term_freqs=tfs,
        lengths=np.array([sum(tf.values()) for tf in tfs], dtype=np.float32),
        df=df,
    )


class AnswerMemory:
    """Retrieval over the answer memory; thread-safe (the core calls it off the loop)."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        embedder: Embedder,
        config: MemoryConfig | None = None,
        count_tokens: Callable[[str], int] = approx_tokens,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.embedder = embedder
        self.config = config or MemoryConfig()
        self.count_tokens = count_tokens
        self.clock = clock
        self._lock = threading.Lock()
        self._shards: dict[int | None, _Shard] = {}
        self._mark: Watermark | None = None
        self._checked_at = float("-inf")

    # embeddings ---------------------------------------------------------------------
    @property
    def min_score(self) -> float:
        """The configured threshold, else the embedding model's measured one."""
        if self.config.min_score is not None:
            return self.config.min_score
        return self.embedder.default_min_score

    @property
    def embedding_model(self) -> str:
        return self.embedder.model_id

    def embed_entry(self, question: str, answer: str) -> bytes:
        """The stored form of an entry's embedding (for ``MemoryEntries.add``/``edit``)."""
        return to_bytes(self.embedder.embed([entry_text(question, answer)])[0])

    def reembed_stale(self, *, batch_size: int = 256) -> int:
        """Embed every entry (any status) without a vector of the current model and
        store the vectors; returns how many. Run at start-up after a model change."""
        model = self.embedder.model_id
        with transaction(self.sessions) as s:
            stale = [
                (r.id, entry_text(r.question, r.answer))
                for r in s.scalars(select(MemoryEntry))
                if r.embedding_model != model or r.embedding is None
            ]
        for start in range(0, len(stale), batch_size):
            chunk = stale[start : start + batch_size]
            vectors = self.embedder.embed([q for _, q in chunk])
            with transaction(self.sessions) as s:
                repo = MemoryEntries(s)
                for (entry_id, _), vector in zip(chunk, vectors, strict=True):
                    repo.set_embedding(entry_id, to_bytes(vector), model)
        if stale:
            log.info("answer memory re-embedded", extra={"entries": len(stale), "model": model})
        return len(stale)

    # freshness ----------------------------------------------------------------------
    def invalidate(self) -> None:
        """Check the watermark on the next retrieval (after a local write)."""
        self._checked_at = float("-inf")

    def refresh(self, *, force: bool = False) -> bool:
        """Reload the index if the table changed since it was built; True if reloaded."""
        now = self.clock()
        if not force and now - self._checked_at < self.config.refresh_interval_s:
            return False
        with self._lock:
            with transaction(self.sessions) as s:
                mark = MemoryEntries(s).watermark()
                self._checked_at = now
                if not force and mark == self._mark:
                    return False
                rows = MemoryEntries(s).active()
                s.expunge_all()
            self._shards = self._build(rows)
            self._mark = mark
        return True

    def _build(self, rows: list[MemoryEntry]) -> dict[int | None, _Shard]:
        dim, model = self.embedder.dim, self.embedder.model_id
        vectors: dict[int, np.ndarray] = {}
        stale: list[MemoryEntry] = []
        for r in rows:
            v = from_bytes(r.embedding, dim) if r.embedding and r.embedding_model == model else None
            if v is None:
                stale.append(r)
            else:
                vectors[r.id] = v
        if stale:
            fresh = self.embedder.embed([entry_text(r.question, r.answer) for r in stale])
            with transaction(self.sessions) as s:
                repo = MemoryEntries(s)
                for r, v in zip(stale, fresh, strict=True):
                    vectors[r.id] = v
                    repo.set_embedding(r.id, to_bytes(v), model)
        by_ws: dict[int | None, list[tuple[MemoryEntry, np.ndarray]]] = {}
        for r in rows:
            by_ws.setdefault(r.workspace_id, []).append((r, vectors[r.id]))
        return {ws: _shard(items, dim) for ws, items in by_ws.items()}

    # retrieval ----------------------------------------------------------------------
    def search(
        self,
        question: str,
        *,
        workspace_id: int | None,
        top_k: int | None = None,
        min_score: float | None = None,
    ) -> list[MemoryHit]:
        """Entries of ``workspace_id`` with cosine at least ``min_score``, best hybrid
        score first."""
        self.refresh()
        shard = self._shards.get(workspace_id)
        if shard is None or not len(shard.ids) or not question.strip():
            return []
        k = top_k or self.config.top_k
        threshold = self.min_score if min_score is None else min_score
        w = self.config.lexical_weight
        q = self.embedder.embed([question])[0]
        cosine = shard.matrix @ q
        lexical = shard.lexical(words(question))
        score = (1.0 - w) * cosine + w * lexical
        order = [i for i in np.argsort(-score, kind="stable") if cosine[i] >= threshold][:k]
        return [
            MemoryHit(
                entry_id=int(shard.ids[i]),
                workspace_id=workspace_id,
                question=shard.questions[i],
                answer=shard.answers[i],
                source=shard.sources[i],
                score=float(score[i]),
                cosine=float(cosine[i]),
                lexical=float(lexical[i]),
            )
            for i in order
        ]

    def retrieve(
        self, question: str, *, workspace_id: int | None, max_tokens: int | None = None
    ) -> tuple[MemoryItem, ...]:
        """What goes into the prompt: the best entries whose block fits ``max_tokens``
        (default: the configured budget; the core passes less when the context is
        short)."""
        hits = self.search(question, workspace_id=workspace_id)
        budget = self.config.max_tokens if max_tokens is None else max_tokens
        return fit_memory([h.item for h in hits], max_tokens=budget, count_tokens=self.count_tokens)

    def size(self, workspace_id: int | None) -> int:
        shard = self._shards.get(workspace_id)
        return 0 if shard is None else len(shard.ids)


def pgvector_available(engine: Engine) -> bool:
    """Whether the PostgreSQL server offers the ``vector`` extension (False elsewhere)."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        found = conn.execute(
            text("select 1 from pg_available_extensions where name = 'vector'")
        ).first()
    return found is not None


def hits_table(hits: Sequence[MemoryHit]) -> list[str]:
    """One line per hit (chat and CLI search output)."""
    return [
        f"#{h.entry_id} {h.score:.2f} (cos {h.cosine:.2f}, lex {h.lexical:.2f}) {h.question[:80]}"
        for h in hits
    ]
