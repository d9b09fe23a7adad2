"""The trainer, the evaluator and the gate on a tiny model: weights move, a sabotaged
candidate is rejected, a killed cycle leaves nothing half-registered."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from learning.evaluate import EvalSpec, evaluate, rouge_l
from learning.examples import Row, plain_prompt, sft_examples, write_jsonl
from learning.finetune import TrainSpec, train_adapter
from learning.gate import GatePolicy, decide
from learning.trainconfig import TrainConfig, TrainConfigError
from storage.models import Adapter, AdapterStatus, LearningRun, RunStatus
from tests.learning.loopdata import qa, seed_support_chats
from tests.learning.test_cycle import TINY_TRAIN

BUILD = plain_prompt("Answer briefly.")


def _train(tmp: Path, model_dir: Path, rows: list[Row], name: str) -> str:
    work = tmp / name
    work.mkdir()
    write_jsonl(work / "sft.jsonl", sft_examples(rows, BUILD))
    spec = TrainSpec(
        model_path=str(model_dir),
        out_dir=str(work / "out"),
        config=TINY_TRAIN,
        sft_path=str(work / "sft.jsonl"),
    )
    return train_adapter(spec).adapter_dir


def test_rouge_l() -> None:
    assert rouge_l("the code is red 3", "The code is red 3.") == 1.0
    assert rouge_l("", "anything") == 0.0
    assert 0 < rouge_l("code red", "the code of item 3 is red") < 1


def test_config_refuses_bad_values() -> None:
    with pytest.raises(TrainConfigError, match="lora_r"):
        TrainConfig(lora_r=0)
    with pytest.raises(TrainConfigError, match="unknown"):
        TrainConfig.from_dict({"epoch": 3})
    assert TrainConfig.from_dict(TINY_TRAIN.to_dict()) == TINY_TRAIN


def test_a_sabotaged_candidate_is_rejected_by_the_gate(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = [
        Row(prompt=q, answer=a, vote=1, source=f"r{i}")
        for i, (q, a) in enumerate(map(qa, range(40)))
    ]
    train, held = rows[:32], rows[32:]
    answers = [r.answer for r in train]
    random.Random(1).shuffle(answers)
    sabotaged = [
        Row(prompt=r.prompt, answer=a, vote=1) for r, a in zip(train, answers, strict=True)
    ]
    good_dir = _train(tmp_path, tiny_model_dir, train, "good")
    bad_dir = _train(tmp_path, tiny_model_dir, sabotaged, "bad")
    items = [
        {"prompt": BUILD(r.prompt), "reference": r.answer, "slice": "s"}
        for r in [*train[:8], *held]
    ]
    write_jsonl(tmp_path / "items.jsonl", items)
    report = evaluate(
        EvalSpec(
            model_path=str(tiny_model_dir),
            adapters={"base": None, "good": good_dir, "bad": bad_dir},
            items_path=str(tmp_path / "items.jsonl"),
            max_new_tokens=12,
            latency_prompts=1,
        )
    )
    policy = GatePolicy(primary="eval_loss", min_gain=0.01)
    good_vs_base = decide(
        report.summary("good"), report.summary("base"), policy, baseline_is_adapter=False
    )
    bad_vs_good = decide(
        report.summary("bad"), report.summary("good"), policy, baseline_is_adapter=True
    )
    assert good_vs_base.passed, good_vs_base.reason()
    assert not bad_vs_good.passed
    assert any(c.rule == "primary" for c in bad_vs_good.failures)
    # the good adapter answers the items it learned; ROUGE-L sees it
    assert (report.models["good"].rouge_l or 0) > (report.models["bad"].rouge_l or 0)


def test_the_gate_rules() -> None:
    base = {"eval_loss": 2.0, "general_loss": 3.0, "ms_per_token": 10.0, "canary_leaks": 0,
            "slices": {"a": {"n": 10, "rouge_l": 0.5}}}  # fmt: skip
    ok = {**base, "eval_loss": 1.5, "ms_per_token": 10.5}
    assert decide(ok, base, GatePolicy(), baseline_is_adapter=True).passed
    leaky = {**ok, "canary_leaks": 1}
    assert [
        c.rule for c in decide(leaky, base, GatePolicy(), baseline_is_adapter=True).failures
    ] == ["canaries"]
    forgetful = {**ok, "general_loss": 3.3}
    assert [
        c.rule for c in decide(forgetful, base, GatePolicy(), baseline_is_adapter=True).failures
    ] == ["forgetting"]
    slow = {**ok, "ms_per_token": 12.0}
    assert not decide(slow, base, GatePolicy(), baseline_is_adapter=True).passed
    assert decide(
        slow, base, GatePolicy(), baseline_is_adapter=False
    ).passed  # vs base: reported only
    worse_slice = {**ok, "slices": {"a": {"n": 10, "rouge_l": 0.3}}}
    assert [
        c.rule for c in decide(worse_slice, base, GatePolicy(), baseline_is_adapter=True).failures
    ] == ["slice:a"]


KILLED_CYCLE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from learning.cycle import LoopConfig, run_cycle
    from learning.gate import GatePolicy
    from storage.db import make_engine, session_factory
    from tests.learning.test_cycle import TINY_TRAIN
    from learning.trainconfig import TrainConfig

    url, model, tmp = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    train = TrainConfig.from_dict({**TINY_TRAIN.to_dict(), "epochs": 400, "save_every": 2})
    config = LoopConfig(model_path=model, base_model_id="tiny", adapter_dir=tmp / "adapters",
        snapshot_dir=tmp / "snapshots", work_dir=tmp / "work", lock_dir=tmp, train=train,
        gate=GatePolicy(), eval_max_new_tokens=4)
    run_cycle(config, sessions=session_factory(make_engine(url)), trigger="test")
    """
)


def test_a_cycle_killed_mid_training_leaves_nothing_half_registered(
    sessions: sessionmaker[Session], db_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from learning.anonymize import Anonymizer
    from learning.cycle import LoopConfig, run_cycle
    from learning.snapshot import build_snapshot

    seed_support_chats(sessions, 24)
    build_snapshot(
        sessions, anonymizer=Anonymizer(), out_dir=tmp_path / "snapshots", eval_fraction=0.25
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CYCLE, db_url, str(tiny_model_dir), str(tmp_path)],
        cwd=root,
        start_new_session=True,  # its own process group: parent and training child die together
    )
    metrics = list((tmp_path / "work").glob("*/train/checkpoints/sft/checkpoint-*"))
    deadline = time.monotonic() + 240
    while not metrics and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        metrics = list((tmp_path / "work").glob("*/train/checkpoints/sft/checkpoint-*"))
    assert metrics, "training never wrote a checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    with sessions() as s:
        assert s.scalars(select(LearningRun.status)).all() == [RunStatus.RUNNING]
        assert s.scalars(select(Adapter)).all() == []

    config = LoopConfig(
        model_path=str(tiny_model_dir), base_model_id="tiny", adapter_dir=tmp_path / "adapters",
        snapshot_dir=tmp_path / "snapshots", work_dir=tmp_path / "work", lock_dir=tmp_path,
        train=TINY_TRAIN, gate=GatePolicy(), eval_max_new_tokens=4,
    )  # fmt: skip
    outcome = run_cycle(config, sessions=sessions, trigger="test")
    assert outcome.status in ("pending", "rejected"), outcome.reason
    with sessions() as s:
        runs = s.scalars(select(LearningRun).order_by(LearningRun.id)).all()
        assert [r.status for r in runs] == [RunStatus.FAILED, RunStatus.SUCCEEDED]
        assert "interrupted" in (runs[0].error or "")
        adapters = s.scalars(select(Adapter)).all()
        assert [a.version for a in adapters] == [outcome.version]
        assert adapters[0].status in (AdapterStatus.PENDING, AdapterStatus.REJECTED)


def test_training_resumes_only_from_a_checkpoint_written_to_the_end(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A process killed while transformers writes checkpoint-N leaves a directory with
    part of its files: the next run must neither resume from it (transformers refuses:
    "Can't find a valid checkpoint") nor keep it."""
    from learning.hf_train import COMPLETE_MARK

    rows = [Row(prompt=q, answer=a, vote=1) for q, a in map(qa, range(12))]
    work = tmp_path / "w"
    work.mkdir()
    write_jsonl(work / "sft.jsonl", sft_examples(rows, BUILD))
    config = TrainConfig.from_dict({**TINY_TRAIN.to_dict(), "epochs": 2})
    spec = TrainSpec(
        model_path=str(tiny_model_dir), out_dir=str(work / "out"), config=config,
        sft_path=str(work / "sft.jsonl"),
    )  # fmt: skip
    first = train_adapter(spec)
    sft = work / "out" / "checkpoints" / "sft"
    done = sorted(sft.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert done and all((p / COMPLETE_MARK).is_file() for p in done)
    assert first.resumed_from is None
    last = int(done[-1].name.split("-")[1])
    torn = sft / f"checkpoint-{last + 1}"
    torn.mkdir()
    (torn / "adapter_config.json").write_text("{}")  # weights, optimizer, state never came
    second = train_adapter(spec)
    assert second.resumed_from == str(done[-1])
    assert not torn.exists()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling classes")
def test_the_training_child_runs_niced_in_the_idle_scheduling_class() -> None:
    """So the bot's threads preempt it at once (nice alone measured TTFT p95 3x idle)."""
    from collections.abc import Callable

    from learning.worker import lower_priority

    probe = "import os; print(os.sched_getscheduler(0), os.nice(0))"
    base = os.nice(0)

    def run(preexec: Callable[[], None]) -> list[int]:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
            preexec_fn=preexec,
        ).stdout  # fmt: skip
        return [int(v) for v in out.split()]

    assert run(lower_priority(5, idle=True)) == [os.SCHED_IDLE, min(19, base + 5)]
    assert run(lower_priority(3, idle=False)) == [os.SCHED_OTHER, min(19, base + 3)]
    assert TrainConfig().idle_priority is True


def test_the_sft_loss_is_the_mean_answer_token_loss_of_each_packed_example(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The trainer's loss (the model's own, not trl's fused head) on a padding-free row of
    two examples equals the answer-token cross-entropy of each example run alone: no
    token attends across the boundary, and prompt tokens carry no loss."""
    import torch
    import torch.nn.functional as F
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    from learning.finetune import library_warnings_quiet
    from learning.hf_train import _plain_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    examples = [
        ([5, 6, 7, 8, 9], [-100, -100, -100, 8, 9]),
        ([11, 12, 13, 14], [-100, -100, 13, 14]),
    ]
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in examples]
    with library_warnings_quiet():  # trl and transformers deprecate each other's names
        args = SFTConfig(
            output_dir=str(tmp_path / "out"), use_cpu=True, padding_free=True, max_length=None,
            dataset_kwargs={"skip_prepare_dataset": True}, report_to=[], bf16=False,
        )  # fmt: skip
        trainer = _plain_loss(SFTTrainer)(
            model=model, args=args, train_dataset=Dataset.from_list(rows),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )  # fmt: skip
    batch = trainer.data_collator(rows)
    assert batch["input_ids"].shape == (1, 9)  # one row, no padding
    peft_model = trainer.model
    peft_model.eval()
    with torch.no_grad():
        loss = float(trainer.compute_loss(peft_model, dict(batch)))
        total, count = 0.0, 0
        for ids, labels in examples:
            logits = peft_model(input_ids=torch.tensor([ids])).logits[0, :-1]
            target = torch.tensor(labels[1:])
            keep = target != -100
            total += float(F.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    assert loss == pytest.approx(total / count, rel=1e-4)
