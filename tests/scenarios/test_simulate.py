"""``chatloop simulate`` end to end on the tiny model: the real core, database, answer
memory, learning cycle, gate, approval command and registry hot-swap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from chatloop.settings import Settings
from chatloop.simulate import QA, SimulationError, load_dataset, plot, run_simulation
from storage.db import make_engine, session_factory
from storage.memory import MemoryEntries
from storage.models import AuditEntry, Reply
from tests.conftest import run
from tests.learning.loopdata import qa


def test_the_simulation_drives_the_real_loop(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        model=str(tiny_model_dir),
        model_cache_dir=tmp_path / "models",
        dtype="float32",
        max_new_tokens=12,
        memory_embedding_model="hashing",
        memory_min_score=0.0,
        learn_train={
            "lora_r": 4,
            "lora_alpha": 8,
            "lora_dropout": 0.0,
            "learning_rate": 0.01,
            "epochs": 3,
            "batch_size": 4,
            "threads": 1,
            "nice": 0,
            "dtype": "float32",
            "target_modules": ["q_proj", "v_proj"],
            "early_stopping_patience": 0,
        },
        learn_gate={"primary": "eval_loss", "min_gain": 0.0, "max_forgetting": 10.0},
        learn_min_examples=2,
        learn_eval_items=12,
    )
    qas = [QA(*qa(i), paraphrases=(f"code for item {i}?", f"item {i} code pls")) for i in range(10)]
    lines: list[str] = []
    result = run(
        run_simulation(settings, qas, cycles=1, echo=lines.append, work_dir=tmp_path / "sim")
    )
    assert [c.cycle for c in result.cycles] == [0, 1]
    assert result.probes == 20 and result.probe_kind == "paraphrases"
    assert set(result.memory_only) >= {"correct_share", "rouge_l", "embed_sim", "n"}
    assert result.cycles[0].general_loss is not None
    fb = result.feedback[0]
    assert fb["up"] + fb["down"] == 10 and fb["corrected"] == fb["down"]
    first = result.cycles[1]
    assert first.status == "pending" and first.promoted, lines  # approved by the maintainer
    assert first.general_loss is not None and first.adapter.startswith("r")

    engine = make_engine(f"sqlite:///{tmp_path / 'sim' / 'sim.db'}")
    try:
        with session_factory(engine)() as s:
            # the wrong answers' corrections entered the memory at once
            assert len(MemoryEntries(s).active()) == fb["down"]
            # the approval went through the chat command, audited as the maintainer
            actors = {
                a.actor for a in s.scalars(select(AuditEntry).filter_by(target_id=first.adapter))
            }
            assert "sim:maintainer" in actors
            # after the hot-swap the probes were answered by the new adapter
            versions = set(s.scalars(select(Reply.adapter_version)))
            assert {"base", first.adapter} <= versions
    finally:
        engine.dispose()
    plot(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    json.dumps(result.to_dict())  # the --json line


def test_datasets_are_read_and_deduplicated(tmp_path: Path) -> None:
    path = tmp_path / "faq.jsonl"
    path.write_text(
        '{"question": "How?", "answer": "So.", "paraphrases": ["how then"]}\n'
        '{"question": "how? ", "answer": "Again."}\n\n'
        '{"question": "Why?", "answer": "Because."}\n'
    )
    assert load_dataset(str(path)) == [QA("How?", "So.", ("how then",)), QA("Why?", "Because.")]
    (tmp_path / "bad.jsonl").write_text('{"q": 1}\n')
    with pytest.raises(SimulationError, match=r"bad\.jsonl:1"):
        load_dataset(str(tmp_path / "bad.jsonl"))
    with pytest.raises(SimulationError, match="unknown data set"):
        load_dataset("nope")
    assert len(load_dataset("qary")) > 300
