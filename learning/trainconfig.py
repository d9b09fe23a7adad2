"""The trainer's hyperparameters: one typed config, every field with its help text.

In the style of peft's ``LoraConfig`` and trl's ``SFTConfig``: a dataclass whose fields
carry ``metadata={"help": ...}``, validated in ``__post_init__``, serializable to JSON
(the trainer runs in its own process and receives it as JSON). ``chatloop`` builds one
from settings; tests and the benchmark build one directly.

It knows nothing of the database, the bot or where the data comes from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from learning.errors import LearningError

Dtype = Literal["auto", "float32", "bfloat16"]


class TrainConfigError(LearningError, ValueError):
    """A hyperparameter is out of range; the message names it."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """LoRA fine-tuning hyperparameters (SFT, then KTO or DPO where the data allows)."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank (the adapter's inner size)."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator: the update is scaled alpha/r."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Module names that get a LoRA pair (all attention and MLP linears)."},
    )
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Share of steps with a linear warm-up."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    epochs: float = field(default=3.0, metadata={"help": "Passes over the training examples."})
    batch_size: int = field(
        default=8, metadata={"help": "Examples per optimizer step (before accumulation)."}
    )
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(
        default=768,
        metadata={"help": "Longest example in tokens; longer ones are cut from the prompt side."},
    )
    padding_free: bool = field(
        default=True,
        metadata={
            "help": "Concatenate a batch's examples into one row with per-example position "
            "ids instead of padding them to the longest (no compute spent on padding)."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute activations in the backward pass instead of keeping them: less "
            "memory for long examples or big models, about a third more compute."
        },
    )
    dtype: Dtype = field(
        default="auto",
        metadata={
            "help": "Compute dtype. auto: bf16 autocast where a short measurement on this "
            "machine shows it is faster than fp32 (cached), fp32 otherwise."
        },
    )
    threads: int = field(
        default=0,
        metadata={"help": "Torch threads of the training process (0: all CPUs minus one)."},
    )
    nice: int = field(
        default=10,
        metadata={
            "help": "Niceness of the training process, so a bot on the same CPUs stays fast."
        },
    )
    idle_priority: bool = field(
        default=True,
        metadata={
            "help": "Also run the training process in Linux's SCHED_IDLE class: it gets only "
            "CPU time the bot does not want (training waits while the bot is busy)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed for data order, dropout and LoRA init."})
    max_steps: int = field(
        default=0, metadata={"help": "Stop after this many optimizer steps (0: no limit)."}
    )
    max_minutes: float = field(
        default=0.0, metadata={"help": "Stop after this many minutes of training (0: no limit)."}
    )
    eval_every: int = field(
        default=0,
        metadata={"help": "Evaluate the eval split every N steps (0: once per epoch)."},
    )
    early_stopping_patience: int = field(
        default=2,
        metadata={"help": "Stop after this many evaluations without a better eval loss (0: off)."},
    )
    replay: float = field(
        default=0.0,
        metadata={
            "help": "General-chat examples mixed into training, as a share of the task "
            "examples (rehearsal against forgetting; 0: none). Drawn from chatterbot-corpus' "
            "training half, never from the held-out half the gate measures forgetting on."
        },
    )
    save_every: int = field(
        default=0,
        metadata={"help": "Write a resumable checkpoint every N steps (0: at each evaluation)."},
    )
    preference: Literal["auto", "off", "kto", "dpo"] = field(
        default="auto",
        metadata={
            "help": "Second stage on thumbs: auto = DPO when enough (👍, 👎) pairs share a "
            "question, else KTO when there are enough of both kinds, else none."
        },
    )
    min_preference_examples: int = field(
        default=16,
        metadata={"help": "Least 👍 and least 👎 examples (or pairs, for DPO) for that stage."},
    )
    preference_beta: float = field(
        default=0.1,
        metadata={"help": "KTO/DPO beta: how far the policy may move from the SFT one."},
    )
    preference_epochs: float = field(
        default=1.0, metadata={"help": "Epochs of the preference stage."}
    )
    preference_learning_rate: float = field(
        default=5e-5, metadata={"help": "Learning rate of the preference stage."}
    )

    def __post_init__(self) -> None:
        positive = {
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "grad_accum": self.grad_accum,
            "max_length": self.max_length,
            "preference_beta": self.preference_beta,
        }
        for name, value in positive.items():
            if not value > 0:
                raise TrainConfigError(f"{name} must be > 0, got {value!r}")
        non_negative = {
            "threads": self.threads,
            "max_steps": self.max_steps,
            "max_minutes": self.max_minutes,
            "eval_every": self.eval_every,
            "early_stopping_patience": self.early_stopping_patience,
            "save_every": self.save_every,
            "weight_decay": self.weight_decay,
            "min_preference_examples": self.min_preference_examples,
            "preference_epochs": self.preference_epochs,
            "replay": self.replay,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise TrainConfigError(f"{name} must be >= 0, got {value!r}")
        if not 0 <= self.lora_dropout < 1:
            raise TrainConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not self.target_modules:
            raise TrainConfigError("target_modules must name at least one module")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise TrainConfigError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.preference not in ("auto", "off", "kto", "dpo"):
            raise TrainConfigError(f"preference must be auto, off, kto or dpo: {self.preference!r}")
        if not -20 <= self.nice <= 19:
            raise TrainConfigError(f"nice must be in [-20, 19], got {self.nice}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(data)
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each field's help text (for ``--help`` output and the README table)."""
        return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}
