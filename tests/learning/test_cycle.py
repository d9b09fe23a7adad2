"""The learning cycle end to end: stored conversations -> snapshot -> training in a child
process -> evaluation -> gate -> registry, with a tiny model and a real database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.cycle import LoopConfig, recover, run_cycle
from learning.gate import GatePolicy
from learning.generalchat import general_chat_set
from learning.privacy import erase_user
from learning.trainconfig import TrainConfig
from serving.registry import list_versions, read_adapter
from storage.db import transaction
from storage.errors import StorageError
from storage.models import Adapter, AdapterStatus, AuditEntry, LearningRun, RunStatus
from storage.repositories import Adapters
from tests.learning.loopdata import seed_support_chats

TINY_TRAIN = TrainConfig(
    lora_r=4,
    lora_alpha=8,
    lora_dropout=0.0,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    learning_rate=1e-2,
    epochs=4,
    batch_size=4,
    threads=1,
    nice=0,
    dtype="auto",
    early_stopping_patience=0,
)


@pytest.fixture(scope="module")
def anonymizer() -> Any:
    from learning.anonymize import Anonymizer

    return Anonymizer()


def loop_config(tmp_path: Path, model_dir: Path, anonymizer: Any, **kw: Any) -> LoopConfig:
    defaults: dict[str, Any] = {
        "model_path": str(model_dir),
        "base_model_id": "tiny",
        "adapter_dir": tmp_path / "adapters",
        "snapshot_dir": tmp_path / "snapshots",
        "work_dir": tmp_path / "work",
        "lock_dir": tmp_path,
        "train": TINY_TRAIN,
        "gate": GatePolicy(primary="eval_loss", min_gain=0.01),
        "system_prompt": "Answer briefly.",
        "anonymizer_factory": lambda: anonymizer,
        "eval_fraction": 0.25,
        "eval_max_new_tokens": 8,
        "general_chat": general_chat_set("Answer briefly.", limit=8),
        "canaries": (("The vault code is", "7391-alpha-kestrel"),),
    }
    defaults.update(kw)
    return LoopConfig(**defaults)


def test_a_full_cycle_takes_stored_conversations_to_an_active_adapter(
    sessions: sessionmaker[Session], tiny_model_dir: Path, anonymizer: Any, tmp_path: Path
) -> None:
    config = loop_config(tmp_path, tiny_model_dir, anonymizer)
    assert run_cycle(config, sessions=sessions, trigger="test").status == "skipped"  # no data

    seed_support_chats(sessions, 32)
    outcome = run_cycle(config, sessions=sessions, trigger="test")
    assert outcome.status == "pending", outcome.reason
    version = outcome.version
    assert version is not None

    # the store holds a complete, verifiable adapter whose LoRA weights moved
    assert list_versions(config.adapter_dir) == [version]
    verified = read_adapter(config.adapter_dir / version, base_model_id="tiny")
    b_weights = [t for k, t in verified.state_dict.items() if "lora_B" in k]
    assert b_weights and all(float(t.abs().sum()) > 0 for t in b_weights)  # B starts at zero
    assert verified.manifest.metrics["gate"]["passed"] is True
    report_dir = config.adapter_dir / "reports" / version
    for name in ("report.json", "report.md", "report.png"):
        assert (report_dir / name).stat().st_size > 0
    report = json.loads((report_dir / "report.json").read_text())
    cand, base = report["models"]["candidate"], report["models"]["base"]
    assert cand["eval_loss"] < base["eval_loss"]
    assert cand["canary_leaks"] == 0 and cand["general_loss"] is not None

    with sessions() as s:
        row = Adapters(s).get(version)
        assert row.status is AdapterStatus.PENDING
        assert row.metrics["snapshots"] and row.snapshot_id == row.metrics["snapshots"][-1]
        actions = [a.action for a in s.scalars(select(AuditEntry).filter_by(target_id=version))]
        run = s.scalars(select(LearningRun).order_by(LearningRun.id.desc())).first()
        assert run is not None and run.status is RunStatus.SUCCEEDED
        assert run.candidate_version == version
    assert actions[:1] == ["adapter.register"] and len(actions) >= 3

    # a maintainer approves: it becomes the active adapter, audited
    with transaction(sessions) as s:
        Adapters(s).transition(version, AdapterStatus.ACTIVE, actor="slack:UMAINT", reason="ok")
    with sessions() as s:
        active = Adapters(s).active()
        assert active is not None and active.version == version

    # nothing new: the next cycle does not train again
    again = run_cycle(config, sessions=sessions, trigger="test")
    assert again.status == "skipped"


def test_an_adapter_whose_data_is_erased_during_training_is_never_promoted(
    sessions: sessionmaker[Session], tiny_model_dir: Path, anonymizer: Any, tmp_path: Path
) -> None:
    users = seed_support_chats(sessions, 24)
    erased: list[int] = []

    def echo(line: str) -> None:  # the loop reports progress; erase while it evaluates
        if line.startswith("· evaluating") and not erased:
            with transaction(sessions) as s:
                erase_user(s, platform="slack", external_id="U10", actor="privacy-test")
            erased.append(users["U10"])

    config = loop_config(
        tmp_path, tiny_model_dir, anonymizer, echo=echo, gate=GatePolicy(auto_promote=True)
    )
    outcome = run_cycle(config, sessions=sessions, trigger="test")
    assert erased, "the erasure hook did not run"
    assert outcome.status == "rejected" and "erased" in outcome.reason
    with sessions() as s:
        row = Adapters(s).get(outcome.version or "")
        assert row.tainted and row.status is AdapterStatus.REJECTED
        assert Adapters(s).active() is None
    with transaction(sessions) as s, pytest.raises(StorageError):
        Adapters(s).transition(row.version, AdapterStatus.ACTIVE, actor="x")


def test_recovery_cleans_what_a_killed_cycle_left(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    store = tmp_path / "adapters"
    (store / "r9-orphan").mkdir(parents=True)
    (store / "r9-orphan" / "manifest.json").write_text("{}")
    (store / ".r9-x.tmp123").mkdir()
    with transaction(sessions) as s:
        s.add(LearningRun(trigger="t", status=RunStatus.RUNNING))
        Adapters(s).register(version="r8-half", base_model="tiny")
    counts = recover(sessions, store)
    assert counts == {"runs": 1, "adapters": 1, "orphan_dirs": 1}
    assert list(store.iterdir()) == []
    with sessions() as s:
        assert s.scalars(select(LearningRun.status)).all() == [RunStatus.FAILED]
        assert s.scalars(select(Adapter.status)).all() == [AdapterStatus.FAILED]


def test_with_retrieval_the_cycle_trains_and_evaluates_with_the_memory_in_the_prompt(
    sessions: sessionmaker[Session], tiny_model_dir: Path, anonymizer: Any, tmp_path: Path
) -> None:
    from learning.cycle import RetrievalConfig
    from serving.prompt import MEMORY_HEADER
    from storage.memory import MemoryEntries
    from storage.models import MemorySource
    from tests.learning.loopdata import qa

    seed_support_chats(sessions, 24)
    with transaction(sessions) as s:
        for i in range(100, 106):  # curated pairs that exist only in the memory
            q, a = qa(i)
            MemoryEntries(s).add(
                workspace_id=None, question=q, answer=a, source=MemorySource.CURATED, actor="cli:m"
            )
    config = loop_config(
        tmp_path,
        tiny_model_dir,
        anonymizer,
        retrieval=RetrievalConfig(embedder="hashing", min_score=0.0, no_match_share=0.2),
    )
    outcome = run_cycle(config, sessions=sessions, trigger="test")
    assert outcome.status in ("pending", "rejected"), outcome.reason
    (work,) = [p for p in (tmp_path / "work").iterdir() if p.is_dir()]
    sft = [json.loads(line) for line in (work / "sft.jsonl").read_text().splitlines()]
    systems = [ex["prompt"][0]["content"] for ex in sft]
    assert all(MEMORY_HEADER in text for text in systems)
    targets = {ex["completion"][0]["content"] for ex in sft}
    assert qa(100)[1] in targets  # a curated entry became training data
    items = [json.loads(line) for line in (work / "eval-items.jsonl").read_text().splitlines()]
    assert items and all(MEMORY_HEADER in it["prompt"][0]["content"] for it in items)


def test_cold_start_trains_a_first_adapter_that_uses_the_memory(
    sessions: sessionmaker[Session], tiny_model_dir: Path, anonymizer: Any, tmp_path: Path
) -> None:
    from learning.coldstart import cold_start, qary_pairs, split_pairs
    from learning.cycle import RetrievalConfig
    from tests.learning.loopdata import qa

    public = qary_pairs()  # the wheel's FAQ pairs, read offline
    assert len(public) > 300 and all(q and a for q, a in public)
    train, test = split_pairs(public)
    assert not {q for q, _ in train} & {q for q, _ in test}

    pairs = [qa(i) for i in range(60)]
    config = loop_config(
        tmp_path,
        tiny_model_dir,
        anonymizer,
        retrieval=RetrievalConfig(embedder="hashing", min_score=0.0, no_match_share=0.2),
    )
    outcome = cold_start(config, sessions=sessions, pairs=pairs, limit=40)
    assert outcome.status in ("pending", "rejected"), outcome.reason
    assert outcome.version and outcome.version.startswith("cold-")
    with sessions() as s:
        row = Adapters(s).get(outcome.version)
        assert row.snapshot_id is None and row.metrics["snapshots"] == []
        assert row.metrics["candidate"]["slices"]["faq-held-out"]["n"] > 0


def test_replay_mixes_general_chat_into_training_and_never_the_held_out_half(
    sessions: sessionmaker[Session], tiny_model_dir: Path, anonymizer: Any, tmp_path: Path
) -> None:
    from learning.cycle import mix_replay
    from learning.trainconfig import TrainConfigError

    pool = general_chat_set("Answer briefly.", held_out=False, limit=6)
    assert mix_replay(pool, 10, 0.0, seed=0) == [] and mix_replay([], 10, 1.0, seed=0) == []
    picked = mix_replay(pool, 10, 0.5, seed=3)
    assert len(picked) == 5 and len({json.dumps(p) for p in picked}) == 5  # no repeats
    assert picked == mix_replay(pool, 10, 0.5, seed=3)  # seeded
    assert len(mix_replay(pool, 10, 1.5, seed=3)) == 15  # a small pool goes round again
    with pytest.raises(TrainConfigError, match="replay"):
        TrainConfig(replay=-0.5)

    seed_support_chats(sessions, 24)
    held_out = general_chat_set("Answer briefly.", limit=8)
    train = TrainConfig.from_dict({**TINY_TRAIN.to_dict(), "epochs": 1, "replay": 0.5})
    config = loop_config(
        tmp_path, tiny_model_dir, anonymizer, train=train, general_chat=held_out,
        replay_chat=pool,
    )  # fmt: skip
    outcome = run_cycle(config, sessions=sessions, trigger="test")
    assert outcome.status in ("pending", "rejected"), outcome.reason
    (sft_file,) = (tmp_path / "work").glob("*/sft.jsonl")
    rows = [json.loads(line) for line in sft_file.read_text().splitlines()]
    prompts = [json.dumps(r["prompt"]) for r in rows]
    replayed = [p for p in prompts if p in {json.dumps(x["prompt"]) for x in pool}]
    task = len(rows) - len(replayed)
    assert task > 0 and len(replayed) == round(task * 0.5)
    assert not {json.dumps(x["prompt"]) for x in held_out} & set(prompts)
