"""One learning cycle: snapshot -> train -> evaluate -> gate -> register.

:func:`run_cycle` is what the scheduler's job and ``chatloop learn --now`` run:

1. take the **learner lock** (one learner across replicas; ``busy`` if held) and
   **recover** what a killed cycle left: runs still ``running`` become ``failed``,
   adapters stuck in ``training`` become ``failed``, adapter directories in the store
   that the registry does not know are removed;
2. build the next **snapshot** (anonymize, clean, split: :mod:`learning.snapshot`);
   skip when no snapshot is newer than the newest one a candidate was trained on;
3. build **examples** from every untainted snapshot (a later row for the same source
   supersedes), prompted as the bot prompts (:data:`~learning.examples.PromptBuilder`,
   which puts the answer memory's entries in the prompt when the loop has one);
4. **train** a LoRA adapter in a child process (:mod:`learning.worker`,
   :mod:`learning.finetune`); its work directory is keyed by the data's hash, so a
   cycle killed mid-training resumes from its last checkpoint next time;
5. **evaluate** the candidate against the active adapter (or the base model) in a
   child process (:mod:`learning.evaluate`) on the eval split, the frozen curated
   eval set, 👍/👎 pairs, seeded canaries and the held-out general-chat set;
6. **gate** (:mod:`learning.gate`) and **register**: the adapter goes into the store
   (manifest last), then, in one transaction that first re-checks that none of its
   snapshots was tainted by an erasure meanwhile, into the registry as a candidate
   and on to ``pending`` (or ``active`` with ``auto_promote``) or ``rejected``, every
   step an audit row. The report (JSON, Markdown, PNG) is stored beside the adapter.

Nothing is registered before its files are complete, so a kill at any point leaves
either nothing or a finished candidate. It knows nothing of the bot or platforms.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.candidate import CandidateJob, CycleOutcome, train_evaluate_register
from learning.errors import CycleError, LearningError
from learning.examples import (
    PromptBuilder,
    Row,
    dpo_examples,
    kto_examples,
    merge_snapshots,
    plain_prompt,
    preference_pairs,
    sft_examples,
)
from learning.gate import GatePolicy
from learning.lock import learner_lock
from learning.ragdata import Pair, PairIndex, rag_examples, rows_from_pairs, served_builder
from learning.snapshot import build_snapshot, read_rows
from learning.trainconfig import TrainConfig
from serving.registry import list_versions
from storage.db import transaction
from storage.memory import MemoryEntries
from storage.models import Adapter, AdapterStatus, DatasetSnapshot, EvalItem, LearningRun, RunStatus
from storage.repositories import Adapters, Audit, LearningRuns

log = logging.getLogger(__name__)

ACTOR = "learning"


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    """Train and evaluate with the answer memory in the prompt, as the bot serves."""

    embedder: str
    top_k: int = 3
    min_score: float | None = None
    """None: the embedding model's measured default threshold."""
    max_tokens: int = 384
    variants: int = 2
    """Chat-style variants of each memory question added to training."""
    no_match_share: float = 0.3
    """General-chat examples with only distractor entries, as a share of the rows."""


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """Everything one cycle needs; ``chatloop`` builds it from settings."""

    model_path: str
    """A local directory holding the base model (already resolved and converted)."""
    base_model_id: str
    """The id adapters are stamped with; serving refuses adapters of another base."""
    adapter_dir: Path
    snapshot_dir: Path
    work_dir: Path
    train: TrainConfig = field(default_factory=TrainConfig)
    gate: GatePolicy = field(default_factory=GatePolicy)
    system_prompt: str = ""
    anonymizer_factory: Callable[[], Any] | None = None
    clean_config: Any = None
    eval_fraction: float = 0.1
    seed: int = 0
    min_train_examples: int = 8
    max_eval_items: int = 200
    eval_max_new_tokens: int = 64
    general_chat: Sequence[dict[str, Any]] = ()
    """The held-out general-chat set the gate measures forgetting on (never trained on)."""
    replay_chat: Sequence[dict[str, Any]] = ()
    """General-chat examples from the other half, mixed in at ``train.replay``."""
    canaries: Sequence[tuple[str, str]] = ()
    embedder: str | None = None
    prompt_builder: PromptBuilder | None = None
    retrieval: RetrievalConfig | None = None
    lock_dir: Path | None = None
    train_timeout_s: float | None = None
    eval_timeout_s: float | None = None
    echo: Callable[[str], None] | None = None
    show_progress: bool = False

    def builder(self) -> PromptBuilder:
        return self.prompt_builder or plain_prompt(self.system_prompt)


# --------------------------------------------------------------------------- recovery
def recover(sessions: sessionmaker[Session], adapter_dir: Path) -> dict[str, int]:
    """Clean up after a cycle that was killed (call with the learner lock held)."""
    counts = {"runs": 0, "adapters": 0, "orphan_dirs": 0}
    with transaction(sessions) as s:
        for run in s.scalars(select(LearningRun).filter_by(status=RunStatus.RUNNING)):
            LearningRuns(s).finish(
                run.id, status=RunStatus.FAILED, error="interrupted (the learner stopped)"
            )
            counts["runs"] += 1
        for row in s.scalars(select(Adapter).filter_by(status=AdapterStatus.TRAINING)):
            row.status = AdapterStatus.FAILED
            Audit(s).record(
                actor=ACTOR,
                action="adapter.fail",
                target_type="adapter",
                target_id=row.version,
                reason="interrupted before registration",
            )
            counts["adapters"] += 1
        known = set(s.scalars(select(Adapter.version)))
    if adapter_dir.is_dir():
        for version in list_versions(adapter_dir):
            if version not in known:
                shutil.rmtree(adapter_dir / version, ignore_errors=True)
                counts["orphan_dirs"] += 1
        for tmp in adapter_dir.glob(".*.*"):  # write_adapter's temporary directories
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
    if any(counts.values()):
        log.warning("recovered from an interrupted cycle", extra=counts)
    return counts


# --------------------------------------------------------------------------- data
@dataclass
class _Data:
    snapshot: DatasetSnapshot
    snapshot_ids: list[int]
    digest: str
    train: list[Row]
    eval: list[Row]
    curated: list[tuple[str, str, list[str]]]


def _gather(s: Session) -> _Data | None:
    snaps = list(
        s.scalars(
            select(DatasetSnapshot)
            .where(DatasetSnapshot.tainted.is_(False))
            .order_by(DatasetSnapshot.id)
        )
    )
    if not snaps:
        return None
    latest = snaps[-1]
    parts_train: list[list[dict[str, Any]]] = []
    parts_eval: list[list[dict[str, Any]]] = []
    for snap in snaps:
        path = Path(snap.path)
        try:
            parts_train.append(read_rows(path, "train"))
            parts_eval.append(read_rows(path, "eval"))
        except (OSError, LearningError, ValueError) as exc:
            raise CycleError(f"snapshot {snap.id} at {path} cannot be read: {exc}") from exc
    curated = [
        (i.question, i.expected_answer, list(i.tags or [])) for i in s.scalars(select(EvalItem))
    ]
    digest = hashlib.sha256(",".join(s.content_hash for s in snaps).encode()).hexdigest()
    return _Data(
        snapshot=latest,
        snapshot_ids=[sn.id for sn in snaps],
        digest=digest,
        train=merge_snapshots(parts_train),
        eval=merge_snapshots(parts_eval),
        curated=curated,
    )


def _eval_items(data: _Data, build: PromptBuilder, limit: int) -> list[dict[str, Any]]:
    items = [
        {"prompt": build(r.prompt), "reference": r.answer, "slice": "snapshot"}
        for r in data.eval
        if r.vote > 0
    ]
    for question, answer, tags in data.curated:
        slice_name = f"curated:{tags[0]}" if tags else "curated"
        items.append({"prompt": build(question), "reference": answer, "slice": slice_name})
    if not items:  # no held-out 👍 yet: judge on a deterministic tenth of the training rows
        ups = sorted((r for r in data.train if r.vote > 0), key=lambda r: r.source)
        items = [
            {"prompt": build(r.prompt), "reference": r.answer, "slice": "train-holdout"}
            for r in ups[:: max(1, len(ups) // 10 or 1)]
        ]
    return items[:limit]


# --------------------------------------------------------------------------- the cycle
def run_cycle(
    config: LoopConfig,
    *,
    sessions: sessionmaker[Session],
    trigger: str,
    progress: bool = False,
) -> CycleOutcome:
    """Run one cycle (see module doc). Never raises for an ordinary failure: the
    outcome says ``failed`` and the learning run row holds the error."""
    return guarded_run(
        config,
        sessions=sessions,
        trigger=trigger,
        body=lambda run_id: _cycle(config, sessions, run_id, progress or config.show_progress),
    )


def guarded_run(
    config: LoopConfig,
    *,
    sessions: sessionmaker[Session],
    trigger: str,
    body: Callable[[int], CycleOutcome],
) -> CycleOutcome:
    """Lock, recover, open a learning run, run ``body(run_id)``; failures end the run."""
    with learner_lock(sessions, lock_dir=config.lock_dir) as held:
        if not held:
            return CycleOutcome(None, "busy", None, "another learner holds the lock")
        recover(sessions, config.adapter_dir)
        with transaction(sessions) as s:
            run_id = LearningRuns(s).start(trigger=trigger).id
        try:
            return body(run_id)
        except (LearningError, OSError, ValueError, RuntimeError) as exc:
            log.exception("learning run failed", extra={"run_id": run_id})
            with transaction(sessions) as s:
                LearningRuns(s).finish(run_id, status=RunStatus.FAILED, error=str(exc)[:4000])
            return CycleOutcome(run_id, "failed", None, str(exc).splitlines()[0][:300])


def active_adapter(s: Session) -> tuple[str, str | None] | None:
    active = Adapters(s).active()
    return (active.version, active.path) if active is not None else None


def _skip(sessions: sessionmaker[Session], run_id: int, reason: str, **report: Any) -> CycleOutcome:
    with transaction(sessions) as s:
        LearningRuns(s).finish(
            run_id, status=RunStatus.SKIPPED, report={"reason": reason, **report}
        )
    log.info("learning cycle skipped", extra={"run_id": run_id, "reason": reason})
    return CycleOutcome(run_id, "skipped", None, reason)


def _cycle(
    config: LoopConfig, sessions: sessionmaker[Session], run_id: int, progress: bool
) -> CycleOutcome:
    echo = config.echo or (lambda _line: None)
    if config.anonymizer_factory is not None:
        echo("· snapshot: selecting, anonymizing and cleaning new feedback")
        build_snapshot(
            sessions,
            anonymizer=config.anonymizer_factory(),
            out_dir=config.snapshot_dir,
            clean_config=config.clean_config,
            eval_fraction=config.eval_fraction,
            seed=config.seed,
        )
    with sessions() as s:
        data = _gather(s)
        trained = set(
            s.scalars(select(Adapter.snapshot_id).where(Adapter.status != AdapterStatus.FAILED))
        )
        active_ref = active_adapter(s)
    if data is None:
        return _skip(sessions, run_id, "no dataset snapshot yet")
    if data.snapshot.id in trained:
        return _skip(sessions, run_id, f"no new data since snapshot {data.snapshot.id}")
    build = config.builder()
    ups = [r for r in data.train if r.vote > 0]
    sft_rows: list[dict[str, Any]] | None = None
    if config.retrieval is not None:
        with sessions() as s:
            entries = [Pair(e.question, e.answer, e.id) for e in MemoryEntries(s).active()]
        build, sft_rows = _retrieval_examples(config, config.retrieval, entries, ups)
    if len(ups) < config.min_train_examples:
        return _skip(
            sessions,
            run_id,
            f"{len(ups)} 👍 examples, fewer than {config.min_train_examples}",
            snapshot_id=data.snapshot.id,
        )
    with transaction(sessions) as s:
        run = s.get(LearningRun, run_id)
        assert run is not None
        run.snapshot_id = data.snapshot.id

    work = config.work_dir / data.digest[:16]
    eval_sft = sft_examples(data.eval, build)
    echo(f"· training on {len(ups)} 👍 examples from snapshots {data.snapshot_ids}")
    pairs = [
        {"prompt": build(good.prompt), "chosen": good.answer, "rejected": bad.answer}
        for good, bad in preference_pairs([*data.train, *data.eval])
    ]
    sft = sft_rows if sft_rows is not None else sft_examples(ups, build)
    replay = mix_replay(config.replay_chat, len(sft), config.train.replay, seed=config.seed)
    if replay:
        echo(f"· mixing in {len(replay)} general-chat examples (replay {config.train.replay:g})")
    return train_evaluate_register(
        config,
        sessions=sessions,
        run_id=run_id,
        work=work,
        job=CandidateJob(
            version=f"r{run_id}-{data.digest[:8]}",
            sft=[*sft, *replay],
            eval_sft=eval_sft,
            kto=kto_examples(data.train, build),
            dpo=dpo_examples(data.train, build),
            items=_eval_items(data, build, config.max_eval_items),
            pairs=pairs,
            snapshot_id=data.snapshot.id,
            snapshot_ids=data.snapshot_ids,
            digest=data.digest,
        ),
        active_ref=active_ref,
        progress=progress,
    )


def mix_replay(
    pool: Sequence[dict[str, Any]], n_task: int, share: float, *, seed: int
) -> list[dict[str, Any]]:
    """``round(n_task * share)`` examples of ``pool`` (a seeded sample, without repeats
    while the pool lasts): ordinary chat the adapter keeps rehearsing, so that learning
    the task does not cost the general behaviour the gate guards."""
    want = round(n_task * share)
    if want <= 0 or not pool:
        return []
    rng = random.Random(seed)
    picked: list[dict[str, Any]] = []
    while len(picked) < want:
        order = list(pool)
        rng.shuffle(order)
        picked.extend(order[: want - len(picked)])
    return picked


def served_index(
    config: LoopConfig, rc: RetrievalConfig, entries: Sequence[Pair]
) -> tuple[PairIndex, PromptBuilder]:
    """An index over ``entries`` with the serving embedder, and prompts as the bot builds
    them from it (top-k over the embedder's threshold, within the memory's budget)."""
    from serving.embed import load_embedder

    embedder = load_embedder(rc.embedder, single_threaded=False)
    index = PairIndex(entries, embedder.embed)
    build = served_builder(
        index,
        system_prompt=config.system_prompt,
        top_k=rc.top_k,
        min_score=rc.min_score if rc.min_score is not None else embedder.default_min_score,
        max_tokens=rc.max_tokens,
    )
    return index, build


def _retrieval_examples(
    config: LoopConfig, rc: RetrievalConfig, entries: list[Pair], ups: list[Row]
) -> tuple[PromptBuilder, list[dict[str, Any]]]:
    """The served prompt builder and retrieval-aware SFT examples (:mod:`learning.ragdata`)."""
    from learning.generalchat import training_pairs

    index, build = served_index(config, rc, entries)
    seen = {(r.prompt.casefold(), r.answer.casefold()) for r in ups}
    extra = [
        r
        for r in rows_from_pairs(entries)
        if (r.prompt.casefold(), r.answer.casefold()) not in seen
    ]
    rows = [*ups, *extra]
    general = training_pairs(int(rc.no_match_share * len(rows)))
    examples = rag_examples(
        rows,
        index,
        system_prompt=config.system_prompt,
        top_k=rc.top_k,
        max_tokens=rc.max_tokens,
        variants=rc.variants,
        general=general,
        seed=config.seed,
    )
    return build, examples
