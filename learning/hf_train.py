"""The trl/peft side of :mod:`learning.finetune`: building and running the trainers.

Kept apart so that importing :mod:`learning.finetune` (specs, results, tokenizing) does
not import trl. Callbacks here: a minutes budget, one JSON line of metrics per log
step, early stopping on eval loss (transformers' callback, best checkpoint restored).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learning.errors import TrainingError
from learning.examples import read_jsonl
from learning.finetune import (
    CHECKPOINTS,
    METRICS,
    TrainSpec,
    _threads,
    choose_train_dtype,
    finite_or_none,
    machine_key,
    tokenize_all,
)
from learning.trainconfig import TrainConfig

log = logging.getLogger(__name__)

COMPLETE_MARK = "chatloop-complete"


@dataclass
class SFTStage:
    model: Any
    steps: int
    epochs: float
    train_loss: float | None
    eval_loss: float | None
    useful_tokens: int
    seconds: float
    dtype: str
    stopped: str
    resumed_from: str | None


def _callbacks(spec: TrainSpec, stage: str) -> tuple[list[Any], dict[str, str]]:
    from transformers import TrainerCallback

    config = spec.config
    stop = {"reason": "completed"}
    metrics_path = Path(spec.out_dir) / METRICS
    deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes else None

    class Budget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if deadline is not None and time.monotonic() >= deadline:
                stop["reason"] = "budget_minutes"
                control.should_training_stop = True
            elif config.max_steps and state.global_step >= config.max_steps:
                stop["reason"] = "budget_steps"
            return control

    class Metrics(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> Any:
            row = {"stage": stage, "step": state.global_step, "epoch": state.epoch}
            row.update({k: v for k, v in (logs or {}).items() if isinstance(v, int | float)})
            with metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            return control

    class MarkComplete(TrainerCallback):
        """transformers calls on_save once a checkpoint is fully written; a process killed
        while writing one leaves a directory without this mark, never resumed from."""

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            done = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            if done.is_dir():
                (done / COMPLETE_MARK).touch()
            return control

    return [Budget(), Metrics(), MarkComplete()], stop


def _common_args(spec: TrainSpec, dtype: str, *, has_eval: bool, stage: str) -> dict[str, Any]:
    import torch

    config = spec.config
    out = Path(spec.out_dir) / CHECKPOINTS / stage
    every = config.eval_every or None
    strategy = "steps" if every else "epoch"
    args: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "weight_decay": config.weight_decay,
        "warmup_steps": config.warmup_ratio,
        "lr_scheduler_type": "linear",
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": dtype == "bfloat16",
        # trl's configs turn it on by default: a third more compute for memory a small
        # model's activations do not need
        "gradient_checkpointing": config.gradient_checkpointing,
        "use_cpu": not torch.cuda.is_available(),
        "logging_steps": 1,
        "report_to": [],
        "disable_tqdm": not spec.show_progress,
        "save_strategy": strategy,
        "save_steps": config.save_every or every or 500,
        "save_total_limit": 2,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
        # padding-free rows hold no padding, and "non_padding" would skip every token
        # equal to the pad id (the eos id when the tokenizer has no pad token)
        "include_num_input_tokens_seen": (
            "all" if config.padding_free and stage == "sft" else "non_padding"
        ),
    }
    if config.max_steps:
        args["max_steps"] = config.max_steps
    if has_eval:
        args.update(
            eval_strategy=strategy,
            eval_steps=every,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
    return args


def _plain_loss(trainer_cls: Any) -> Any:
    """``trainer_cls`` computing the loss the way ``transformers.Trainer`` does.

    trl's SFTTrainer routes every forward through its fused, chunked LM head, which
    also computes the entropy and top-1 accuracy over the whole vocabulary for its
    logs and recomputes the chunks in the backward pass: 45% of a training step on a
    2-core CPU (SmolLM2-135M, 49k-token vocabulary). The model's own loss (mean
    cross-entropy over the answer tokens, ``num_items_in_batch`` across gradient
    accumulation) is the same objective without that work.
    """
    from transformers import Trainer

    class PlainLoss(trainer_cls):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            inputs["use_cache"] = False
            return Trainer.compute_loss(
                self, model, inputs, return_outputs=return_outputs,
                num_items_in_batch=num_items_in_batch,
            )  # fmt: skip

    PlainLoss.__name__ = f"PlainLoss{trainer_cls.__name__}"
    return PlainLoss


def _quiet_printer(trainer: Any, spec: TrainSpec) -> None:
    """Without a progress bar transformers prints every log dict; metrics.jsonl has them."""
    from transformers.trainer_callback import PrinterCallback

    if not spec.show_progress:
        trainer.remove_callback(PrinterCallback)


def _last_checkpoint(path: Path) -> str | None:
    """The newest checkpoint that was written to the end, after removing any that were not.

    A cycle killed while transformers wrote ``checkpoint-N`` leaves the directory with
    some of its files; resuming from it fails ("Can't find a valid checkpoint"), and
    transformers' own rotation would count it. Only directories marked by
    :class:`MarkComplete` are trusted.
    """
    if not path.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in path.iterdir():
        name = child.name
        if not (child.is_dir() and name.startswith("checkpoint-") and name[11:].isdigit()):
            continue
        if (child / COMPLETE_MARK).is_file():
            found.append((int(name[11:]), child))
        else:
            log.warning("removing a checkpoint that was never finished", extra={"path": str(child)})
            shutil.rmtree(child, ignore_errors=True)
    return str(max(found)[1]) if found else None


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def run_sft(
    spec: TrainSpec, examples: list[dict[str, Any]], evals: list[dict[str, Any]]
) -> SFTStage:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

    config = spec.config
    torch.manual_seed(config.seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(_threads(config))
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
        model = AutoModelForCausalLM.from_pretrained(spec.model_path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load the base model {spec.model_path}: {exc}") from exc
    if torch.cuda.is_available():
        model.to("cuda")  # type: ignore[arg-type]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows = tokenize_all(tokenizer, examples, config.max_length)
    eval_rows = tokenize_all(tokenizer, evals, config.max_length)
    if not train_rows:
        raise TrainingError("every training example is longer than max_length")
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None

    sample = train_rows[: config.batch_size]
    device = next(model.parameters()).device
    probe = {
        "input_ids": torch.tensor([[t for r in sample for t in r["input_ids"]]], device=device),
        "labels": torch.tensor([[t for r in sample for t in r["labels"]]], device=device),
    }
    cache = Path(spec.dtype_cache) if spec.dtype_cache else None
    dtype, _timings = choose_train_dtype(config, model, probe, cache, machine_key(spec.model_path))

    if dtype == "bfloat16":
        # the base is frozen: held in bf16, autocast need not cast every weight at every
        # step (~11% of a step on a 2-core CPU); peft keeps the LoRA weights in fp32
        model.to(torch.bfloat16)  # type: ignore[arg-type]
    callbacks, stop = _callbacks(spec, "sft")
    has_eval = eval_ds is not None
    if has_eval and config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    args = SFTConfig(
        **_common_args(spec, dtype, has_eval=has_eval, stage="sft"),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        padding_free=config.padding_free,
        max_length=None,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = _plain_loss(SFTTrainer)(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=callbacks,
    )
    _quiet_printer(trainer, spec)
    resume = _last_checkpoint(Path(str(args.output_dir)))
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    state = trainer.state
    if has_eval and config.early_stopping_patience and stop["reason"] == "completed":
        planned = state.max_steps
        if state.global_step < planned:
            stop["reason"] = "early_stopping"
    eval_loss = None
    if has_eval:
        eval_loss = finite_or_none(trainer.evaluate().get("eval_loss"))
    return SFTStage(
        model=trainer.model,
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        train_loss=finite_or_none(output.training_loss),
        eval_loss=eval_loss,
        useful_tokens=int(state.num_input_tokens_seen or 0),
        seconds=seconds,
        dtype=dtype,
        stopped=stop["reason"],
        resumed_from=resume,
    )


def run_preference_stage(spec: TrainSpec, stage: SFTStage) -> dict[str, Any]:
    """KTO or DPO on top of the SFT adapter, when configured and the data allows it."""
    config = spec.config
    if config.preference == "off":
        return {"kind": None, "reason": "off"}
    dpo = read_jsonl(Path(spec.dpo_path)) if spec.dpo_path else []
    kto = read_jsonl(Path(spec.kto_path)) if spec.kto_path else []
    need = config.min_preference_examples
    ups = sum(bool(e["label"]) for e in kto)
    downs = len(kto) - ups
    kind: str | None = None
    if config.preference in ("auto", "dpo") and len(dpo) >= need:
        kind = "dpo"
    elif config.preference in ("auto", "kto") and min(ups, downs) >= need:
        kind = "kto"
    if kind is None:
        return {
            "kind": None,
            "reason": f"not enough data: {len(dpo)} pairs, {ups} 👍 / {downs} 👎 (need {need})",
        }
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    callbacks, stop = _callbacks(spec, kind)
    common = _common_args(spec, stage.dtype, has_eval=False, stage=kind)
    common.update(
        learning_rate=config.preference_learning_rate,
        num_train_epochs=config.preference_epochs,
        include_num_input_tokens_seen="no",
        max_length=config.max_length,
    )
    if "max_steps" in common:
        common.pop("max_steps")
    start = time.perf_counter()
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

        trainer: Any = DPOTrainer(
            model=stage.model,
            args=DPOConfig(**common, beta=config.preference_beta),
            train_dataset=Dataset.from_list(dpo),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        n = len(dpo)
    else:
        from trl import KTOConfig, KTOTrainer  # type: ignore[attr-defined]

        common["per_device_train_batch_size"] = max(2, config.batch_size)
        trainer = KTOTrainer(
            model=stage.model,
            args=KTOConfig(**common, beta=config.preference_beta),
            train_dataset=Dataset.from_list(kto),
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        n = len(kto)
    _quiet_printer(trainer, spec)
    output = trainer.train(resume_from_checkpoint=_last_checkpoint(Path(common["output_dir"])))
    stage.model = trainer.model
    log.info("preference stage done", extra={"kind": kind, "examples": n, "pid": os.getpid()})
    return {
        "kind": kind,
        "examples": n,
        "steps": trainer.state.global_step,
        "train_loss": finite_or_none(output.training_loss),
        "seconds": round(time.perf_counter() - start, 3),
        "stopped": stop["reason"],
    }
